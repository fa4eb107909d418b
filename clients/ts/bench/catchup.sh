#!/usr/bin/env bash
# Catch-up after missed edits, the TypeScript SDK vs stock y-websocket (README "TypeScript SDK"):
# a fresh gateway and a fresh reference @y/websocket-server, both pinned to core 0, the bench on
# core 1. The gateway runs with its defaults except the per-client message rate limits, raised so
# the one writer can append 5,000 entries in seconds (the limits do not touch catch-up).
# Usage: bash clients/ts/bench/catchup.sh   (from the repository root, after `make install`)
#   MISSED=10,500,5000 REPEATS=3 choose the cases.
set -euo pipefail
REFERENCE=node_modules/@y/websocket-server/src/server.js
[ -f "$REFERENCE" ] || { echo "missing $REFERENCE: run make install" >&2; exit 2; }
# shellcheck source=/dev/null
source "$(dirname "${BASH_SOURCE[0]}")/../../../loadtest/wait_port.sh"
gateway_port=$((20000 + RANDOM % 10000))
reference_port=$((30000 + RANDOM % 10000))
data=$(mktemp -d)
GATEWAY_DATA_DIR=$data GATEWAY_PORT=$gateway_port GATEWAY_LOG_LEVEL=warning \
  GATEWAY_MESSAGES_PER_SECOND=100000 GATEWAY_MESSAGE_BURST=100000 \
  taskset -c 0 .venv/bin/gateway serve >/dev/null 2>&1 &
gateway_pid=$!
HOST=127.0.0.1 PORT=$reference_port taskset -c 0 node "$REFERENCE" >/dev/null 2>&1 &
reference_pid=$!
trap 'kill $gateway_pid $reference_pid 2>/dev/null || true; rm -rf "$data"' EXIT
wait_port "$gateway_port"
wait_port "$reference_port"
taskset -c 1 node clients/ts/bench/catchup.mjs "ws://127.0.0.1:$gateway_port/ws" \
  "ws://127.0.0.1:$reference_port/ws" "${MISSED:-10,500,5000}" "${REPEATS:-3}"
