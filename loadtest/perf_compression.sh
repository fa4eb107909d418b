#!/usr/bin/env bash
# Reproduce loadtest/README.md "Compression and batching": the gateway in four configurations —
# plain, permessage-deflate, batched broadcasts, both — under the same loads, each run on a
# fresh server process pinned to core 0, the generator on core 1 (as perf.sh).
# The generator always offers permessage-deflate (as browsers do): the server decides.
# Usage: bash loadtest/perf_compression.sh [OUT_DIR]   (from the repository root)
#   REPEAT=2 runs every (load, configuration) twice, interleaved; BATCH_MS=20 the batch delay.
set -euo pipefail
OUT=${1:-/tmp/wedsync-compression}
PY=${PY:-.venv/bin/python}
SERVER_CORE=${SERVER_CORE:-0}
GENERATOR_CORE=${GENERATOR_CORE:-1}
DURATION=${DURATION:-20}
REPEAT=${REPEAT:-1}
BATCH_MS=${BATCH_MS:-20}
mkdir -p "$OUT"

declare -A LOADS=(
  [steady-200]="--scenario steady --weddings 50 --clients 4 --rate 1"
  [typing-100]="--scenario steady --weddings 25 --clients 4 --rate 10"
)
declare -A CONFIGS=(
  [plain]=""
  [deflate]="GATEWAY_WS_PER_MESSAGE_DEFLATE=true"
  [batch]="GATEWAY_BROADCAST_BATCH_MS=$BATCH_MS"
  [both]="GATEWAY_WS_PER_MESSAGE_DEFLATE=true GATEWAY_BROADCAST_BATCH_MS=$BATCH_MS"
)

# shellcheck source=/dev/null
source "$(dirname "${BASH_SOURCE[0]}")/wait_port.sh"

for round in $(seq "$REPEAT"); do
  for name in steady-200 typing-100; do
    for config in plain deflate batch both; do
      port=$((20000 + RANDOM % 20000))
      # shellcheck disable=SC2086
      env ${CONFIGS[$config]} GATEWAY_DATA_DIR="$(mktemp -d)" GATEWAY_PORT=$port \
        taskset -c "$SERVER_CORE" .venv/bin/gateway serve >"$OUT/$config-server.log" 2>&1 &
      pid=$!
      wait_port "$port"
      echo "== $name, $config (${CONFIGS[$config]:-defaults}), round $round"
      # shellcheck disable=SC2086
      taskset -c "$GENERATOR_CORE" "$PY" -m loadtest run --url "ws://127.0.0.1:$port/ws" \
        ${LOADS[$name]} --duration "$DURATION" --workers 1 --deflate --server-pid "$pid" \
        --report "$OUT/$name-$config-$round.json" --no-plots --quiet || echo "run exited with $?"
      kill "$pid"; wait "$pid" 2>/dev/null || true
    done
  done
done
for name in steady-200 typing-100; do
  "$PY" -m loadtest compare "$OUT"/$name-*.json
done | tee "$OUT/summary.md"
