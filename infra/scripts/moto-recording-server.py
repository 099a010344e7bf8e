"""moto server whose request recording (MOTO_ENABLE_RECORDING, the persistence of `make dev`) is safe
under concurrent requests and knows which queue messages were consumed.

- moto's Recorder._record_request appends each request to the recording from the request's own thread,
  without a lock: the writes of concurrent requests (a large S3 upload next to SQS sends) interleave and
  leave lines that are not JSON. Here every append runs under one lock, so each line is whole, and a
  SIGTERM/SIGINT takes the same lock before exiting, so a stop never cuts a line in half.
- A replayed DeleteMessage carries a receipt handle of the previous run and deletes nothing, so every
  message ever sent would come back at each start (and its consumer would run again). When a message is
  deleted, a marker line `{"sqs_consumed": {"queue": NAME, "sha256": HASH_OF_BODY}}` is recorded;
  compact-recording.py removes one earlier send of that body to that queue, so only unconsumed messages
  are replayed.
Usage: moto-recording-server.py -H 127.0.0.1 -p PORT   (the arguments of moto_server)
"""
import hashlib
import json
import sys
import threading

import moto.server
from moto.moto_api import recorder
from moto.moto_api._internal.recorder.models import Recorder
from moto.sqs.models import Queue

_lock = threading.Lock()
_record_request = Recorder._record_request


def _record_request_locked(self, request, body=None):
    with _lock:
        return _record_request(self, request, body)


Recorder._record_request = _record_request_locked

_delete_message = Queue.delete_message


def _delete_message_recorded(self, receipt_handle):
    # The message this receipt handle belongs to, if it is still in the queue.
    deleted = [
        m for m in self._messages if m.had_receipt_handle(receipt_handle) and receipt_handle not in self.deleted_messages
    ]
    _delete_message(self, receipt_handle)
    if not recorder._user_enabled:
        return
    for message in deleted:
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode("utf-8")
        # A GET of moto's own API: should the line ever be replayed as it is, it changes nothing.
        marker = {
            "headers": {},
            "method": "GET",
            "url": "http://127.0.0.1/moto-api/",
            "body": "",
            "body_encoded": False,
            "sqs_consumed": {"queue": self.name, "sha256": hashlib.sha256(body).hexdigest()},
        }
        with _lock, open(recorder._location, "a") as f:
            f.write(json.dumps(marker) + "\n")


Queue.delete_message = _delete_message_recorded

_signal_handler = moto.server.signal_handler


def _stop(signum, frame):
    # Wait for the line being written, if any; the lock is never released: the process exits.
    _lock.acquire()
    _signal_handler(signum, frame)


moto.server.signal_handler = _stop

moto.server.main(sys.argv[1:])
