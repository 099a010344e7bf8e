#!/usr/bin/env bash
# `make dev`: the local AWS stack (persistent) + the dev gateway on 127.0.0.1:3000. Ctrl-C stops both.
# DynamoDB Local on DYNAMODB_PORT (8000), moto server on MOTO_PORT (4566), the gateway on PORT (3000);
# PARAMS="Key=Value Key2=Value2" overrides template parameters (like sam's --parameter-overrides).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
moto_port=${MOTO_PORT:-4566}
ddb_port=${DYNAMODB_PORT:-8000}
state=.local/dev
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$ddb_port"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
infra/scripts/local-aws.sh start "$moto_port" "$ddb_port" "$state" --persist
trap 'infra/scripts/local-aws.sh stop "$state"' EXIT INT TERM
echo "DynamoDB Local on $AWS_ENDPOINT_URL_DYNAMODB, moto server (S3, SQS, Secrets Manager) on $AWS_ENDPOINT_URL;"
echo "data kept in $state (make reset wipes it)"
args=(up --stack hub-dev --port "${PORT:-3000}")
if [ -n "${PARAMS:-}" ]; then
  args+=(--parameter-overrides "$PARAMS")
fi
./target/debug/devstack "${args[@]}"
