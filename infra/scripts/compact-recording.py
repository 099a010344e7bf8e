"""Keeps only the state-changing requests of a moto recording, so that replaying it at the next
`make dev` restores the data quickly (reads and the queue poller's long polls are dropped).

- Queue messages: only those not consumed yet are kept. moto-recording-server.py records a marker
  `sqs_consumed` (queue, SHA-256 of the body) when a message is deleted; each marker removes one earlier
  send of that body to that queue (an entry of a SendMessageBatch, or the whole SendMessage). PurgeQueue
  and DeleteQueue remove every earlier send to their queue. Receipt-handle requests (DeleteMessage,
  ChangeMessageVisibility) are dropped: their handles mean nothing to the next run.
- DynamoDB requests are dropped: DynamoDB is DynamoDB Local, which keeps its own database on disk (a
  recording made before that would replay them into moto, where nothing reads them).
- A damaged line (cut short by a crash, or interleaved by a moto without the recording lock) never
  stops the start: it is skipped, and counted on stderr.
Usage: compact-recording.py RECORDING.jsonl
"""
import base64
import collections
import hashlib
import json
import os
import sys

READ_ONLY = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "ReceiveMessage", "Head")
SQS_RECEIPT_HANDLE_ACTIONS = ("DeleteMessage", "DeleteMessageBatch", "ChangeMessageVisibility",
                              "ChangeMessageVisibilityBatch")


def is_dynamodb(headers):
    if headers.get("x-amz-target", "").startswith("DynamoDB_"):
        return True
    # The credential scope of a SigV4 signature names the service: .../us-east-1/dynamodb/aws4_request
    return "/dynamodb/aws4_request" in headers.get("authorization", "")


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def queue_name(url):
    return str(url).rstrip("/").rsplit("/", 1)[-1]


def json_body(entry):
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8")
    return json.loads(body)


class Sends:
    """The SQS messages sent in the recording and not consumed, by (queue, body hash)."""

    def __init__(self):
        self.pending = collections.defaultdict(collections.deque)  # (queue, sha) -> [(line, entry id)]
        self.removed = collections.defaultdict(set)  # line -> entry ids removed (None: the SendMessage)

    def sent(self, queue, line, body, entry_id=None):
        self.pending[(queue, sha256(body))].append((line, entry_id))

    def consumed(self, queue, digest):
        waiting = self.pending.get((queue, digest))
        if waiting:
            line, entry_id = waiting.popleft()
            self.removed[line].add(entry_id)

    def cleared(self, queue):
        for (q, _), waiting in self.pending.items():
            if q == queue:
                for line, entry_id in waiting:
                    self.removed[line].add(entry_id)
                waiting.clear()


def main(path):
    kept, damaged, dynamodb, total = [], 0, 0, 0
    sends = Sends()
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            total += 1
            try:
                entry = json.loads(raw.decode("utf-8"))
                if not isinstance(entry, dict) or not isinstance(entry.get("headers", {}), dict):
                    raise ValueError("not a recorded request")
                headers = {str(k).lower(): str(v) for k, v in entry.get("headers", {}).items()}
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                damaged += 1
                if damaged <= 5:
                    print(f"compact-recording: skipping damaged line {number} of {path}: {e}", file=sys.stderr)
                continue
            marker = entry.get("sqs_consumed")
            if isinstance(marker, dict):
                sends.consumed(marker.get("queue"), marker.get("sha256"))
                continue
            if is_dynamodb(headers):
                dynamodb += 1
                continue
            target = headers.get("x-amz-target", "")
            action = target.rsplit(".", 1)[-1]
            if entry.get("method") in ("GET", "HEAD") or action.startswith(READ_ONLY):
                continue
            if target.startswith("AmazonSQS."):
                if action in SQS_RECEIPT_HANDLE_ACTIONS:
                    continue
                try:
                    body = json_body(entry)
                    line = len(kept)
                    if action == "SendMessage":
                        sends.sent(queue_name(body["QueueUrl"]), line, body["MessageBody"])
                    elif action == "SendMessageBatch":
                        for e in body["Entries"]:
                            sends.sent(queue_name(body["QueueUrl"]), line, e["MessageBody"], e["Id"])
                    elif action in ("PurgeQueue", "DeleteQueue"):
                        sends.cleared(queue_name(body["QueueUrl"]))
                except (ValueError, KeyError, TypeError):
                    pass  # not a request we understand: replayed as it is
            kept.append(entry)

    out = []
    for line, entry in enumerate(kept):
        removed = sends.removed.get(line)
        if removed:
            if None in removed:  # a SendMessage whose message was consumed
                continue
            body = json_body(entry)
            entries = [e for e in body["Entries"] if e["Id"] not in removed]
            if not entries:
                continue
            body["Entries"] = entries
            entry["body"], entry["body_encoded"] = json.dumps(body), False
            entry["headers"] = {k: v for k, v in entry["headers"].items() if k.lower() != "content-length"}
        out.append(json.dumps(entry) + "\n")

    # Replace the recording in one step: a crash here leaves the old one or the new one, never half.
    tmp = f"{path}.compacting"
    with open(tmp, "w") as f:
        f.writelines(out)
    os.replace(tmp, path)
    if damaged:
        print(
            f"compact-recording: skipped {damaged} damaged line(s) of {total} in {path}; the rest is replayed",
            file=sys.stderr,
        )
    if dynamodb:
        print(
            f"compact-recording: dropped {dynamodb} DynamoDB request(s) recorded by an older `make dev` "
            "(DynamoDB Local keeps its own data now; `make reset` starts clean)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main(sys.argv[1])
