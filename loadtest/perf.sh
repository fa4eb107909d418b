#!/usr/bin/env bash
# Reproduce loadtest/README.md "Performance": steady and big-wedding at two load levels, against
# the embedded gateway and the reference y-websocket server, each on a fresh server process.
# The server is pinned to core 0 and the load generator to core 1 (taskset), so both servers
# get the same single core and the generator never competes with them.
# Usage: bash loadtest/perf.sh [OUT_DIR]   (from the repository root, after `make install`)
set -euo pipefail
OUT=${1:-/tmp/wedsync-perf}
PY=${PY:-.venv/bin/python}
SERVER_CORE=${SERVER_CORE:-0}
GENERATOR_CORE=${GENERATOR_CORE:-1}
DURATION=${DURATION:-20}
REFERENCE=node_modules/@y/websocket-server/src/server.js
mkdir -p "$OUT"
[ -f "$REFERENCE" ] || { echo "missing $REFERENCE: run npm ci" >&2; exit 2; }

declare -A LOADS=(
  [steady-200]="--scenario steady --weddings 50 --clients 4 --rate 1"
  [steady-1000]="--scenario steady --weddings 200 --clients 5 --rate 2"
  [big-wedding-100]="--scenario big-wedding --clients 100 --rate 0.2"
  [big-wedding-200]="--scenario big-wedding --clients 200 --rate 0.25"
)

# shellcheck source=/dev/null
source "$(dirname "${BASH_SOURCE[0]}")/wait_port.sh"

start_server() {  # $1 = gateway | reference, $2 = port; prints the pid
  if [ "$1" = gateway ]; then
    GATEWAY_DATA_DIR=$(mktemp -d) GATEWAY_PORT=$2 taskset -c "$SERVER_CORE" \
      .venv/bin/gateway serve >"$OUT/$1-server.log" 2>&1 &
  else
    HOST=127.0.0.1 PORT=$2 taskset -c "$SERVER_CORE" node "$REFERENCE" >"$OUT/$1-server.log" 2>&1 &
  fi
  echo $!
}

for name in steady-200 steady-1000 big-wedding-100 big-wedding-200; do
  for server in gateway reference; do
    port=$((20000 + RANDOM % 20000))
    pid=$(start_server "$server" "$port")
    wait_port "$port"
    echo "== $name on $server (pid $pid, core $SERVER_CORE; generator on core $GENERATOR_CORE)"
    # shellcheck disable=SC2086
    taskset -c "$GENERATOR_CORE" "$PY" -m loadtest run --url "ws://127.0.0.1:$port/ws" \
      ${LOADS[$name]} --duration "$DURATION" --workers 1 --server-pid "$pid" \
      --report "$OUT/$name-$server.json" --quiet || echo "run exited with $?"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
"$PY" -m loadtest compare "$OUT"/*.json | tee "$OUT/summary.md"
