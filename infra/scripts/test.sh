#!/usr/bin/env bash
# `make test`: template checks, then unit, integration and end-to-end tests against a private local
# AWS stack (DynamoDB Local in memory + moto server) on its own ports (never the ones `make dev` uses),
# stopped afterwards; then the persistence test of `make dev`'s stack (infra/scripts/test-persistence.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export SAM_CLI_TELEMETRY=0

# Debian's chromium and chromium-driver, for the browser tests of the hub's pages (DESIGN.md §3b):
# installed with apt-get (through sudo when not root) only when either is missing.
need_browser() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "   installing chromium and chromium-driver (apt-get)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver >/dev/null
}

echo "== template.yaml: cfn-lint and sam validate --lint"
.venv/bin/cfn-lint template.yaml
.venv/bin/sam validate --lint --template template.yaml --region us-east-1 >/dev/null

echo "== partner code (Spark's Node SSO signer, from the npm registry)"
npm ci --prefix infra/partner-node --silent --no-audit --no-fund

echo "== reference OAuth server for the conformance tests (npm oidc-provider)"
npm ci --prefix infra/oidc-provider --silent --no-audit --no-fund

echo "== headless browser for the page tests (Debian's chromium and chromium-driver)"
need_browser

echo "== build (functions, devstack, tests: the one build make dev and the tools share)"
infra/scripts/build.sh

read -r moto_port ddb_port < <(infra/scripts/local-aws.sh free-ports 2)
moto_port=${TEST_MOTO_PORT:-$moto_port}
ddb_port=${TEST_DYNAMODB_PORT:-$ddb_port}
state="$(mktemp -d)"
# DynamoDB goes to DynamoDB Local (the SDK's service-specific variable), everything else to moto.
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
trap 'infra/scripts/local-aws.sh stop "$state"; rm -rf "$state"' EXIT INT TERM
infra/scripts/local-aws.sh start "$moto_port" "$ddb_port" "$state"
echo "== tests (DynamoDB Local on $AWS_ENDPOINT_URL_DYNAMODB, moto on $AWS_ENDPOINT_URL)"
cargo test --workspace --locked 2>&1 | tee "$state/cargo-test.log"

echo "== API contract: schemathesis against the dev gateway, as each role (docs/openapi.json)"
# The gateway's request log (thousands of lines) goes to a file; its end is shown when the run fails.
mkdir -p target/test-artifacts
contract_log=target/test-artifacts/contract-gateway.log
if ! target/debug/devstack contract 2>"$contract_log"; then
  echo "-- the last lines of $contract_log:"; tail -n 40 "$contract_log"; exit 1
fi

echo "== nothing reached moto's DynamoDB (every client honours AWS_ENDPOINT_URL_DYNAMODB)"
.venv/bin/python - <<'PY'
import os, sys
import boto3
tables = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"]).list_tables()["TableNames"]
if tables:
    sys.exit(f"{len(tables)} table(s) were created in moto, not DynamoDB Local, e.g. {tables[:3]}: "
             "some client bypasses AWS_ENDPOINT_URL_DYNAMODB")
PY
infra/scripts/local-aws.sh stop "$state"

echo "== make dev's persistence: a concurrent load, stop, start, data still there"
infra/scripts/test-persistence.sh

# One closing line for the whole run: the Rust tests counted by cargo (the contract and persistence
# steps above fail the run on their own when they fail).
awk '/^test result:/ { passed += $4; failed += $6 }
  END { printf "make test: %d passed, %d failed\ntest result: %s. %d passed; %d failed (cargo test, whole workspace)\n",
        passed, failed, failed ? "FAILED" : "ok", passed, failed }' "$state/cargo-test.log"
