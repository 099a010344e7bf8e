#!/usr/bin/env python3
"""The emails the local SES (moto, run by `make dev`) was asked to send, newest last, as a mailbox shows them.

    infra/scripts/mail.py [ADDRESS] [--port 4566] [--last N]

Reads moto's state (`/moto-api/data.json`) and parses each raw MIME message with Python's own email
package: subject, recipients and the plain-text part (links included).
"""
import argparse
import email
import email.policy
import json
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", help="only emails to this address")
    parser.add_argument("--port", type=int, default=4566, help="moto's port (make dev: 4566)")
    parser.add_argument("--last", type=int, default=5, help="how many to show")
    args = parser.parse_args()
    with urllib.request.urlopen(f"http://127.0.0.1:{args.port}/moto-api/data.json", timeout=5) as answer:
        data = json.load(answer)
    messages = data.get("ses", {}).get("RawMessage", [])
    if args.address:
        wanted = args.address.casefold()
        messages = [m for m in messages if any(d.casefold() == wanted for d in m.get("destinations", []))]
    if not messages:
        print("no emails" + (f" to {args.address}" if args.address else ""))
    for m in messages[-args.last:]:
        parsed = email.message_from_string(m["raw_data"], policy=email.policy.default)
        text = parsed.get_body(preferencelist=("plain",))
        print(f"To: {parsed['To']}\nSubject: {parsed['Subject']}\n")
        print(text.get_content().strip() if text else "(no text part)")
        print("\n" + "-" * 72)


if __name__ == "__main__":
    main()
