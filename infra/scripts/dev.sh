#!/usr/bin/env bash
# `make dev`: the local AWS stack (persistent) + the dev gateway on 127.0.0.1:3000. Ctrl-C stops both.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
port=${MOTO_PORT:-4566}
state=.local/dev
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
infra/scripts/local-aws.sh start "$port" "$state" --persist >/dev/null
trap 'infra/scripts/local-aws.sh stop "$state"' EXIT INT TERM
echo "moto server (local AWS) on $AWS_ENDPOINT_URL, data kept in $state (make reset wipes it)"
./target/debug/devstack up --stack hub-dev --port "${PORT:-3000}"
