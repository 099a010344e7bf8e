#!/usr/bin/env python3
"""A partner app written with Authlib (PyPI `authlib`), run by the Rust tests against the hub's OAuth server.

    authlib_client.py BASE CLIENT_ID CLIENT_SECRET REDIRECT_URI SESSION_TOKEN

It does what a partner's Python integration does: the authorization code flow with PKCE (S256) and
`client_secret_basic`, a refresh, a revocation, and client credentials with `client_secret_post`. The
user's part (opening the authorize URL in a browser and pressing Allow) is played over HTTP with the
user's session cookie. Prints one JSON object of what it saw; exits non-zero on any protocol error.
"""
import html.parser
import json
import os
import sys

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

# The local stack serves plain http on loopback; Authlib refuses that unless told (production is https).
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"


class HiddenFields(html.parser.HTMLParser):
    """The hidden inputs of the consent form, as a browser would submit them."""

    def __init__(self):
        super().__init__()
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")


def consent(url, session_token):
    """Opens the authorize URL as the signed-in user, presses Allow, returns where the app is sent."""
    browser = requests.Session()
    browser.cookies.set("__Host-hub_access", session_token)
    page = browser.get(url, allow_redirects=False)
    if page.status_code == 200:
        # Browsers send `Secure` cookies back to http://127.0.0.1 (a secure context); requests does not.
        browser.cookies.set("__Host-hub_csrf", page.cookies.get("__Host-hub_csrf"))
        form = HiddenFields()
        form.feed(page.text)
        page = browser.post(url.split("?")[0], data={**form.fields, "decision": "allow"}, allow_redirects=False)
    assert page.status_code in (302, 303), f"authorize answered {page.status_code}"
    return page.headers["Location"]


def main():
    base, client_id, client_secret, redirect_uri, session_token = sys.argv[1:6]
    meta = requests.get(f"{base}/.well-known/oauth-authorization-server").json()
    out = {"issuer": meta["issuer"]}

    app = OAuth2Session(
        client_id,
        client_secret,
        scope="profile progress:read",
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(64)
    url, state = app.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
    back = consent(url, session_token)
    out["state_echoed"] = f"state={state}" in back
    token = app.fetch_token(meta["token_endpoint"], authorization_response=back, code_verifier=verifier)
    out["scope"] = token["scope"]
    me = requests.get(f"{base}/api/auth/me", headers={"Authorization": f"Bearer {token['access_token']}"})
    out["me"] = me.json()["id"]

    refreshed = app.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    out["rotated"] = refreshed["refresh_token"] != token["refresh_token"]
    reused = requests.post(
        meta["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
        auth=(client_id, client_secret),
    )
    out["reuse_error"] = reused.json().get("error")

    fresh = app.fetch_token(
        meta["token_endpoint"],
        authorization_response=consent(app.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)[0], session_token),
        code_verifier=verifier,
    )
    revoked = app.revoke_token(meta["revocation_endpoint"], token=fresh["access_token"])
    out["revoke_status"] = revoked.status_code
    after = requests.get(f"{base}/api/auth/me", headers={"Authorization": f"Bearer {fresh['access_token']}"})
    out["after_revoke_status"] = after.status_code

    server = OAuth2Session(client_id, client_secret, scope="webhooks:manage", token_endpoint_auth_method="client_secret_post")
    own = server.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    hooks = requests.get(f"{base}/api/webhooks/subscriptions", headers={"Authorization": f"Bearer {own['access_token']}"})
    out["webhooks_status"] = hooks.status_code
    out["webhooks_organization"] = hooks.json().get("organization_id")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
