#!/usr/bin/env bash
# The persistence of `make dev`'s local stack (local-aws.sh --persist), in a temporary directory and on
# its own ports: a concurrent load (DynamoDB puts, transactions and counter updates; S3 puts, many
# larger than moto's write buffer; SQS sends, some then received and deleted; secrets), stop, start,
# and every count must be the same (consumed messages stay consumed).
# Then one line of moto's recording is damaged on purpose: the next start must still work, say that it
# skipped the line, and lose only that request.
#   infra/scripts/test-persistence.sh          (make test runs it; also make test-persistence)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
read -r moto_port ddb_port < <(infra/scripts/local-aws.sh free-ports 2)
state="$(mktemp -d)"
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=persist AWS_SECRET_ACCESS_KEY=persist
trap 'infra/scripts/local-aws.sh stop "$state"; rm -rf "$state"' EXIT INT TERM
py() { .venv/bin/python - "$@" <<'PY'
import concurrent.futures as cf
import json
import os
import sys

import boto3
from botocore.config import Config

mode, state = sys.argv[1], sys.argv[2]
config = Config(region_name=os.environ["AWS_REGION"], max_pool_connections=32, retries={"max_attempts": 2})
ddb = boto3.client("dynamodb", config=config)  # AWS_ENDPOINT_URL_DYNAMODB: DynamoDB Local
s3 = boto3.client("s3", config=config)  # AWS_ENDPOINT_URL: moto
sqs = boto3.client("sqs", config=config)
sm = boto3.client("secretsmanager", config=config)
assert ddb.meta.endpoint_url == os.environ["AWS_ENDPOINT_URL_DYNAMODB"], ddb.meta.endpoint_url
TABLE, BUCKET, QUEUE = "persist", "persist", "persist"
ITEMS, TXS, COUNTER, OBJECTS, MESSAGES, BATCHES, SECRETS = 1000, 100, 200, 240, 300, 20, 10
CONSUMERS, CONSUMED = 4, 30  # messages received and deleted by each consumer: they must not come back


def run(fn, n):
    with cf.ThreadPoolExecutor(24) as pool:
        list(pool.map(fn, range(n)))


def counts():
    items, start = 0, None
    while True:
        page = ddb.scan(TableName=TABLE, Select="COUNT", **({"ExclusiveStartKey": start} if start else {}))
        items += page["Count"]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    counter = int(ddb.get_item(TableName=TABLE, Key={"pk": {"S": "counter"}}, ConsistentRead=True)["Item"]["n"]["N"])
    objects, size = 0, 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        objects += len(page.get("Contents", []))
        size += sum(o["Size"] for o in page.get("Contents", []))
    url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    messages = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"])
    secrets = sum(len(p["SecretList"]) for p in sm.get_paginator("list_secrets").paginate())
    return {"items": items, "counter": counter, "objects": objects, "bytes": size, "messages": messages, "secrets": secrets}


if mode == "load":
    ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    s3.create_bucket(Bucket=BUCKET)
    url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]

    def one(i):
        # Every kind of request at once, so that recordings of different threads can meet.
        if i < ITEMS:
            ddb.put_item(TableName=TABLE, Item={"pk": {"S": f"item-{i}"}, "body": {"S": "x" * (i % 50)}})
        if i < TXS:
            ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": TABLE, "Item": {"pk": {"S": f"tx-{i}-{side}"}},
                         "ConditionExpression": "attribute_not_exists(pk)"}} for side in "ab"])
        if i < COUNTER:
            ddb.update_item(TableName=TABLE, Key={"pk": {"S": "counter"}}, UpdateExpression="ADD n :one",
                            ExpressionAttributeValues={":one": {"N": "1"}})
        if i < OBJECTS:
            # Bodies from 1 KiB to 96 KiB: the larger ones exceed the 8 KiB buffer of moto's recorder file.
            s3.put_object(Bucket=BUCKET, Key=f"objects/{i}", Body=os.urandom(1024 * (1 + i % 96)))
        if i < MESSAGES:
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"i": i, "pad": "m" * (i * 37 % 20000)}))
        if i < BATCHES:
            sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(k), "MessageBody": f"batch {i} {k}"} for k in range(10)])
        if i < SECRETS:
            sm.create_secret(Name=f"persist/{i}", SecretString=json.dumps({"i": i}))

    run(one, ITEMS)

    def consume(c):
        left = CONSUMED
        while left:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(left, 10), VisibilityTimeout=300)
            messages = got.get("Messages", [])[:left]
            if c % 2:
                for m in messages:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            elif messages:
                sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(messages)])
            left -= len(messages)

    run(consume, CONSUMERS)
    expected = counts()
    want = {"items": ITEMS + 2 * TXS + 1, "counter": COUNTER, "objects": OBJECTS,
            "messages": MESSAGES + 10 * BATCHES - CONSUMERS * CONSUMED, "secrets": SECRETS}
    got = {k: expected[k] for k in want}
    assert got == want, f"the load itself is wrong: {got} != {want}"
    # One more request, recorded last: the line the damage test cuts in half.
    s3.put_object(Bucket=BUCKET, Key="canary", Body=b"canary")
    json.dump(counts(), open(f"{state}/expected.json", "w"))
elif mode in ("check", "check-damaged"):
    expected = json.load(open(f"{state}/expected.json"))
    if mode == "check-damaged":  # all but the canary, whose line was damaged
        expected.update(objects=expected["objects"] - 1, bytes=expected["bytes"] - len(b"canary"))
    got = counts()
    canary = bool(s3.list_objects_v2(Bucket=BUCKET, Prefix="canary").get("Contents"))
    if got != expected or canary == (mode == "check-damaged"):
        sys.exit(f"persistence: after restart {got} (canary {canary}), expected {expected}")
    if mode == "check":
        print(f"persistence: {got['items']} items (counter {got['counter']}), {got['objects']} objects "
              f"({got['bytes']} bytes), {got['messages']} messages, {got['secrets']} secrets survived restart")
    else:
        print("persistence: a damaged recording line was skipped; everything else survived restart")
PY
}

infra/scripts/local-aws.sh start "$moto_port" "$ddb_port" "$state" --persist
py load "$state"
infra/scripts/local-aws.sh stop "$state"

infra/scripts/local-aws.sh start "$moto_port" "$ddb_port" "$state" --persist 2>"$state/start.err" ||
  { cat "$state/start.err" >&2; exit 1; }
if grep -q "damaged" "$state/start.err"; then
  cat "$state/start.err" >&2
  echo "persistence: moto's recording has damaged lines after a concurrent load (the recording lock failed)" >&2
  exit 1
fi
py check "$state"
infra/scripts/local-aws.sh stop "$state"

# Cut the canary's line in half, as a crash in the middle of a write would.
python3 - "$state/moto-recording.jsonl" <<'PY'
import sys
path = sys.argv[1]
lines = open(path).readlines()
hits = [i for i, line in enumerate(lines) if "/persist/canary" in line and '"PUT"' in line]
assert len(hits) == 1, f"expected one recorded PUT of the canary, found {len(hits)}"
lines[hits[0]] = lines[hits[0]][: len(lines[hits[0]]) // 2] + "\n"
open(path, "w").writelines(lines)
PY
infra/scripts/local-aws.sh start "$moto_port" "$ddb_port" "$state" --persist 2>"$state/start.err" ||
  { cat "$state/start.err" >&2; exit 1; }
grep -q "skipped 1 damaged line" "$state/start.err" ||
  { cat "$state/start.err" >&2; echo "persistence: the start did not report the damaged line" >&2; exit 1; }
sed 's/^/  /' "$state/start.err"
py check-damaged "$state"
