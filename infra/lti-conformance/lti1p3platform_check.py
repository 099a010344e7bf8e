"""An independent LTI 1.3 platform library (PyPI `lti1p3platform`) checks what the hub signs.

Reads a JSON object on stdin:
  {"jwks_url": our JWKS URL, "issuer": the platform's issuer, "client_id": our client id,
   "client_assertion": the JWT our token request would carry, "scope": the scopes it asks for,
   "deep_linking_jwt": a signed LtiDeepLinkingResponse}
and prints what the library made of them, as JSON:
  {"token": {"scope", "token_type"} or {"error"}, "content_items": [...] or {"error"}}
The library fetches our JWKS itself, picks the key by `kid` and `alg`, and verifies the signature and
`exp` with PyJWT; it is the code a Python LMS would run against our tool.
"""

import json
import sys

from jwcrypto.jwk import JWK
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.registration import Registration


class Platform(LTI1P3PlatformConfAbstract):
    """A platform that knows one tool: ours."""

    def init_platform_config(self, **kwargs):
        self.settings = kwargs

    def get_registration_by_params(self, **kwargs):
        own_key = JWK.generate(kty="RSA", size=2048)
        return (
            Registration()
            .set_iss(self.settings["issuer"])
            .set_client_id(self.settings["client_id"])
            .set_tool_key_set_url(self.settings["jwks_url"])
            .set_platform_private_key(own_key.export_to_pem(private_key=True, password=None).decode())
            .set_platform_public_key(own_key.export_to_pem().decode())
        )


def outcome(check):
    try:
        return check()
    except Exception as error:  # the library's refusals are exceptions of several types
        return {"error": f"{type(error).__name__}: {error}"}


def main():
    given = json.load(sys.stdin)

    def platform():
        p = Platform(issuer=given["issuer"], client_id=given["client_id"], jwks_url=given["jwks_url"])
        p.get_registration()
        return p

    def token():
        answer = platform().get_access_token(
            {
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": given["client_assertion"],
                "scope": given["scope"],
            }
        )
        return {"scope": answer["scope"], "token_type": answer["token_type"]}

    def content_items():
        return platform().validate_deeplinking_resp({"JWT": given["deep_linking_jwt"]})

    print(json.dumps({"token": outcome(token), "content_items": outcome(content_items)}))


if __name__ == "__main__":
    main()
