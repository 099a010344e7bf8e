#!/usr/bin/env bash
# `make test`: template checks, then unit, integration and end-to-end tests against a private local
# AWS stack on its own port (never the one `make dev` uses), stopped afterwards.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export SAM_CLI_TELEMETRY=0

echo "== template.yaml: cfn-lint and sam validate --lint"
.venv/bin/cfn-lint template.yaml
.venv/bin/sam validate --lint --template template.yaml --region us-east-1 >/dev/null

echo "== partner code (Spark's Node SSO signer, from the npm registry)"
npm ci --prefix infra/partner-node --silent --no-audit --no-fund

echo "== build (functions, devstack, tests)"
cargo build --workspace --bins --tests --locked

port=${TEST_MOTO_PORT:-$((20000 + RANDOM % 20000))}
state="$(mktemp -d)"
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
infra/scripts/local-aws.sh start "$port" "$state" >/dev/null
trap 'infra/scripts/local-aws.sh stop "$state"; rm -rf "$state"' EXIT INT TERM
echo "== tests (local AWS stack on $AWS_ENDPOINT_URL)"
cargo test --workspace --locked
