"""Keeps only the state-changing requests of a moto recording, so that replaying it at the next
`make dev` restores the data quickly (reads and the queue poller's long polls are dropped)."""
import json
import sys

READ_ONLY = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "ReceiveMessage", "Head")

path = sys.argv[1]
kept = []
with open(path) as f:
    for line in f:
        entry = json.loads(line)
        headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
        action = headers.get("x-amz-target", "").rsplit(".", 1)[-1]
        if entry.get("method") in ("GET", "HEAD") or action.startswith(READ_ONLY):
            continue
        kept.append(line if line.endswith("\n") else line + "\n")
with open(path, "w") as f:
    f.writelines(kept)
