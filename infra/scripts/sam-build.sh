#!/usr/bin/env bash
# `make sam-build`: every function of template.yaml built as a deployment builds it, for the architecture of
# the template's Globals (arm64, Graviton): release profile, cross-compiled by cargo-lambda with zig. Leaves
# what `sam build` leaves (.aws-sam/build/<LogicalId>/bootstrap and .aws-sam/build/template.yaml, ready for
# `sam deploy`), plus one zip per function as `sam package` makes it (.aws-sam/zips/<LogicalId>.zip), and
# prints each size.
#
#   make sam-build          one `cargo lambda build --release` for all binaries (cargo runs a fat-LTO link per
#                           core), then `sam build`, whose per-function `cargo lambda build` then finds its
#                           binary built: byte-identical binaries and the same built template as below.
#   make sam-build SAM=1    plain `sam build` (BuildMethod rust-cargolambda): one cargo-lambda invocation per
#                           function, one after the other, so the links use one core.
# The README has the measured times (what the default saves depends on how many cores are free).
#
# Builds go to their own target directory (LAMBDA_TARGET_DIR, default target-lambda/), so they never wait for
# cargo's lock on target/ (`make test` keeps working meanwhile), and run under `nice` (NICE, default 19).
# Needs cargo-lambda and zig (installed here from PyPI into .venv) and the Rust standard library of the
# target (`rustup target add`). Extra arguments go to `sam build`.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
[ -x .venv/bin/sam ] || make -s .venv/.installed
[ -x .venv/bin/cargo-lambda ] || .venv/bin/pip install --quiet cargo-lambda==1.9.2
export PATH="$root/.venv/bin:$PATH" SAM_CLI_BETA_RUST_CARGO_LAMBDA=1 SAM_CLI_TELEMETRY=0
export CARGO_TARGET_DIR="${LAMBDA_TARGET_DIR:-$root/target-lambda}"
nice=(nice -n "${NICE:-19}")

# The architecture every function is deployed on: the template's Globals (no function overrides it).
case "$(sed -n 's/^    Architectures: \[\(.*\)\]$/\1/p' template.yaml)" in
  arm64) arch=arm64 triple=aarch64-unknown-linux-gnu ;;
  x86_64) arch=x86-64 triple=x86_64-unknown-linux-gnu ;;
  *) echo "template.yaml: Globals.Function.Architectures must be [arm64] or [x86_64]" >&2; exit 1 ;;
esac
if ! rustup target list --installed | grep -qx "$triple"; then
  rustup target add "$triple" || {
    echo "cannot install the Rust standard library for $triple (rustup target add $triple): needed to cross-compile" >&2
    exit 1
  }
fi

if [ -n "${SAM:-}" ]; then
  how="sam build, one cargo lambda build per function"
  echo "== $how ($arch, target dir $CARGO_TARGET_DIR)"
  "${nice[@]}" sam build --beta-features --template template.yaml "$@"
else
  how="one cargo lambda build for all binaries, then sam build"
  echo "== cargo lambda build --release --$arch: every binary at once (target dir $CARGO_TARGET_DIR)"
  "${nice[@]}" cargo lambda build --release "--$arch" --locked -p functions
  stamp="$(mktemp)"
  trap 'rm -f "$stamp"' EXIT
  echo
  echo "== sam build: the same per-function builds, each finding its binary built ($SECONDS s so far)"
  "${nice[@]}" sam build --beta-features --template template.yaml "$@"
  # Had a per-function build compiled anything, the two ways would not give the same binaries: say so.
  rebuilt=$(find "$CARGO_TARGET_DIR/$triple/release/deps" -maxdepth 1 -type f -perm -u+x -newer "$stamp" | wc -l)
  if [ "$rebuilt" -ne 0 ]; then
    echo "warning: sam build rebuilt $rebuilt binaries that the single build had made" >&2
  fi
fi
echo
python3 infra/scripts/lambda-zips.py
elapsed=$SECONDS
printf 'sam-build: %d min %02d s on %s cores (%s)\n' $((elapsed / 60)) $((elapsed % 60)) "$(nproc)" "$how"
