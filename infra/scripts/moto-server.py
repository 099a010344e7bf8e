"""moto server with DynamoDB requests serialised.

moto's TransactWriteItems snapshots whole tables to roll back a failed transaction, without a lock:
under concurrent requests it crashes ("dictionary changed size during iteration") or, worse, a
failed transaction restores a snapshot taken before a concurrent write and silently erases it. Real
DynamoDB serialises conflicting transactions; running every DynamoDB request under one lock gives the
local stack the same guarantees. Other services (SQS long polls) stay concurrent.
Usage: moto-server.py -H 127.0.0.1 -p PORT   (the arguments of moto_server)
"""
import sys
import threading

from moto.dynamodb.responses import DynamoHandler

_dynamodb = threading.RLock()
_call_action = DynamoHandler.call_action


def _serialised(self):
    with _dynamodb:
        return _call_action(self)


DynamoHandler.call_action = _serialised

from moto.server import main  # noqa: E402  (after the patch, so every handler sees it)

main(sys.argv[1:])
