#!/usr/bin/env bash
# Starts moto server (the local AWS stack) on loopback and waits until it answers.
#   local-aws.sh start PORT STATE_DIR [--persist]   (prints the server's pid)
#   local-aws.sh stop STATE_DIR
# With --persist, every request is recorded in STATE_DIR/moto-recording.jsonl and replayed on the
# next start, so a restarted `make dev` keeps its data. `make reset` deletes the recording.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
cmd=$1
case "$cmd" in
  start)
    port=$2; dir=$3; persist=${4:-}
    mkdir -p "$dir"
    if [ "$persist" = "--persist" ]; then
      export MOTO_ENABLE_RECORDING=True MOTO_RECORDER_FILEPATH="$dir/moto-recording.jsonl"
      [ -s "$MOTO_RECORDER_FILEPATH" ] && python3 "$here/infra/scripts/compact-recording.py" "$MOTO_RECORDER_FILEPATH"
    fi
    # moto_server with DynamoDB requests serialised, as DynamoDB's transactions are (see the script).
    "$here/.venv/bin/python" "$here/infra/scripts/moto-server.py" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/moto.pid"
    for _ in $(seq 1 100); do
      if curl -fs "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1; then
        if [ "$persist" = "--persist" ] && [ -s "$dir/moto-recording.jsonl" ]; then
          curl -fs -X POST "http://127.0.0.1:$port/moto-api/recorder/replay-recording" >/dev/null
        fi
        echo "$pid"
        exit 0
      fi
      kill -0 "$pid" 2>/dev/null || { cat "$dir/moto.log" >&2; echo "moto server failed to start on port $port" >&2; exit 1; }
      sleep 0.1
    done
    echo "moto server did not answer on port $port" >&2; exit 1 ;;
  stop)
    dir=$2
    [ -f "$dir/moto.pid" ] && kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
    rm -f "$dir/moto.pid" ;;
  *) echo "usage: $0 start PORT DIR [--persist] | stop DIR" >&2; exit 2 ;;
esac
