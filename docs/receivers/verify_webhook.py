"""Verifying Optio webhook deliveries in Python, with the standard library only.

Always verify the raw request body, byte for byte, before parsing it. In Flask:

    from verify_webhook import verify_delivery

    @app.post("/hooks/optio")
    def optio_webhook():
        if not verify_delivery(request.get_data(), request.headers, os.environ["OPTIO_WEBHOOK_SECRET"]):
            abort(401)
        ...  # deduplicate on request.headers["X-Optio-Delivery"], then answer 2xx quickly

The `standardwebhooks` package (pip install standardwebhooks) verifies the Standard Webhooks headers too:

    from standardwebhooks.webhooks import Webhook
    Webhook(secret).verify(request.get_data(), dict(request.headers))  # raises when invalid
"""

import base64
import hashlib
import hmac
import json
import sys
import time


def _header(headers, name):
    """Case-insensitive header lookup (works with dicts and Werkzeug/Django header objects)."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify_optio_signature(raw_body: bytes, headers, secret: str) -> bool:
    """X-Optio-Signature: "sha256=" + hex HMAC-SHA256 of the raw body, keyed with the whole secret string.
    During the 24 hours after a rotation, X-Optio-Signature-Previous carries the old secret's signature."""
    expected = "sha256=" + hmac.new(secret.encode(), raw_body, hashlib.sha256).hexdigest()
    return any(
        value is not None and hmac.compare_digest(value, expected)
        for value in (_header(headers, "x-optio-signature"), _header(headers, "x-optio-signature-previous"))
    )


def verify_standard_webhook(raw_body: bytes, headers, secret: str, tolerance_seconds: int = 300, now=None) -> bool:
    """Standard Webhooks: "v1,<base64 HMAC-SHA256 of id.timestamp.body>", keyed with the base64-decoded part
    of the secret after "whsec_"; several signatures are separated by spaces; the timestamp must be recent."""
    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not msg_id or not timestamp or not signatures or not timestamp.isdigit():
        return False
    if abs((now or time.time()) - int(timestamp)) > tolerance_seconds:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + raw_body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for entry in signatures.split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


def verify_delivery(raw_body: bytes, headers, secret: str) -> bool:
    """Either scheme is enough; checking one is fine."""
    return verify_standard_webhook(raw_body, headers, secret) or verify_optio_signature(raw_body, headers, secret)


if __name__ == "__main__":
    # python3 verify_webhook.py < request.json with {"body_base64", "headers", "secret"}: prints what verifies.
    request = json.load(sys.stdin)
    raw = base64.b64decode(request["body_base64"])
    print(json.dumps({
        "optio": verify_optio_signature(raw, request["headers"], request["secret"]),
        "standard": verify_standard_webhook(raw, request["headers"], request["secret"]),
    }))
