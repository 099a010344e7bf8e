#!/usr/bin/env bash
# `make sam-build`: `sam build` of every function with BuildMethod rust-cargolambda, as a deployment
# would do it. Slow (release builds); needs cargo-lambda and zig, installed here from PyPI into .venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
[ -x .venv/bin/cargo-lambda ] || .venv/bin/pip install --quiet cargo-lambda==1.9.2
export PATH="$root/.venv/bin:$PATH" SAM_CLI_BETA_RUST_CARGO_LAMBDA=1 SAM_CLI_TELEMETRY=0
sam build --beta-features --template template.yaml "$@"
echo
for f in .aws-sam/build/*/bootstrap; do
  printf '%-40s %s\n' "$f" "$(du -h "$f" | cut -f1)"
done
