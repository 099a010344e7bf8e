"""pylti1p3's MessageLaunch validation of the same signed launches our handler checks (bench/lti).

Reads the JSON file `devstack bench-lti` wrote: {"issuer", "client_id", "deployment_id", "jwks",
"launches": [{"id_token", "nonce", "state"}]}. Each launch goes through `MessageLaunch.validate()`: state,
JWT format, nonce, registration, signature (the JWKS is given inline, as a warm cache), deployment and
message claims; the session and cookie services are in memory. Prints one JSON line: how many launches
validated and the time per launch (mean, p50, p99, microseconds), measured with the process's CPU clock.
"""

import json
import statistics
import sys
import time

from pylti1p3.cookie import CookieService
from pylti1p3.message_launch import MessageLaunch
from pylti1p3.request import Request
from pylti1p3.session import SessionService
from pylti1p3.tool_config import ToolConfDict


class FormPost(Request):
    def __init__(self, params):
        self.params = params

    @property
    def session(self):
        return {}

    def is_secure(self):
        return True

    def get_param(self, key):
        return self.params.get(key)


class Launch(MessageLaunch):
    def _get_request_param(self, key):
        return self._request.get_param(key)


class Nonces(SessionService):
    """The nonces the logins issued, each usable once."""

    def __init__(self, nonces):
        self.nonces = set(nonces)

    def check_nonce(self, nonce):
        if nonce in self.nonces:
            self.nonces.discard(nonce)
            return True
        return False

    def check_state_is_valid(self, state, id_token_hash):
        return False

    def save_launch_data(self, key, jwt_body):
        pass

    def set_state_valid(self, state, id_token_hash):
        pass


class Cookies(CookieService):
    def __init__(self, state):
        self.state = state

    def get_cookie(self, name):
        return self.state

    def set_cookie(self, name, value, exp=3600):
        pass


def main():
    given = json.load(open(sys.argv[1]))
    config = ToolConfDict(
        {
            given["issuer"]: [
                {
                    "default": True,
                    "client_id": given["client_id"],
                    "auth_login_url": "https://lms.example/auth",
                    "auth_token_url": "https://lms.example/token",
                    "key_set_url": None,
                    "key_set": given["jwks"],
                    "deployment_ids": [given["deployment_id"]],
                }
            ]
        }
    )
    launches = given["launches"]
    nonces = Nonces(l["nonce"] for l in launches)
    times = []
    validated = 0
    for launch in launches:
        request = FormPost({"id_token": launch["id_token"], "state": launch["state"]})
        started = time.process_time_ns()
        Launch(request, config, session_service=nonces, cookie_service=Cookies(launch["state"])).validate()
        times.append((time.process_time_ns() - started) / 1000)
        validated += 1
    warm = times[min(20, len(times) // 10):]
    quantiles = statistics.quantiles(warm, n=100)
    print(json.dumps({"validated": validated, "mean_us": statistics.mean(warm), "p50_us": quantiles[49], "p99_us": quantiles[98]}))


if __name__ == "__main__":
    main()
