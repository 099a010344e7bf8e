#!/usr/bin/env bash
# The one build of the repository: `make dev`, `make test` and the local tools (`make token`, `secret`,
# `openapi`) all run exactly this, so after any of them the others compile nothing. Cargo resolves
# features per selection of packages: a narrower build (`cargo build -p devstack`) would resolve other
# features and rebuild the dependency tree.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo build --workspace --bins --tests --locked "$@"
