#!/usr/bin/env bash
# Reproduce loadtest/README.md "Resume: bytes and time to catch up": python -m loadtest.resume_bench
# against a fresh gateway and a fresh reference @y/websocket-server, both pinned to core 0, the
# bench on core 1 (as perf.sh).
# The gateway runs with its defaults except the per-client message rate limits, raised so the
# one writing client can make 5,000 edits in seconds (the limits do not touch catch-up).
# Usage: bash loadtest/resume_bench.sh [OUT_DIR]   (from the repository root, after `make install`)
#   MISSED=10,500,5000 TARGETS=core,timeline HISTORY=100 CHURN=0 REPEATS=7 choose the cases;
#   CHURN=400 gives the document a large delete set before the reader leaves.
set -euo pipefail
OUT=${1:-/tmp/wedsync-resume}
PY=${PY:-.venv/bin/python}
SERVER_CORE=${SERVER_CORE:-0}
GENERATOR_CORE=${GENERATOR_CORE:-1}
REFERENCE=node_modules/@y/websocket-server/src/server.js
mkdir -p "$OUT"
[ -f "$REFERENCE" ] || { echo "missing $REFERENCE: run npm ci" >&2; exit 2; }

# shellcheck source=/dev/null
source "$(dirname "${BASH_SOURCE[0]}")/wait_port.sh"

gateway_port=$((20000 + RANDOM % 10000))
reference_port=$((30000 + RANDOM % 10000))
GATEWAY_DATA_DIR=$(mktemp -d) GATEWAY_PORT=$gateway_port \
  GATEWAY_MESSAGES_PER_SECOND=100000 GATEWAY_MESSAGE_BURST=100000 \
  taskset -c "$SERVER_CORE" .venv/bin/gateway serve >"$OUT/gateway-server.log" 2>&1 &
gateway_pid=$!
HOST=127.0.0.1 PORT=$reference_port taskset -c "$SERVER_CORE" node "$REFERENCE" \
  >"$OUT/reference-server.log" 2>&1 &
reference_pid=$!
trap 'kill $gateway_pid $reference_pid 2>/dev/null || true' EXIT
wait_port "$gateway_port"
wait_port "$reference_port"

taskset -c "$GENERATOR_CORE" "$PY" -m loadtest.resume_bench \
  --gateway "ws://127.0.0.1:$gateway_port/ws" --reference "ws://127.0.0.1:$reference_port/ws" \
  --missed "${MISSED:-10,500,5000}" --target "${TARGETS:-core,timeline}" \
  --history "${HISTORY:-100}" --churn "${CHURN:-0}" --repeats "${REPEATS:-7}" \
  --report "$OUT/resume.json" | tee "$OUT/resume.md"
