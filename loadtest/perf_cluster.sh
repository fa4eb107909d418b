#!/usr/bin/env bash
# Cross-node numbers (README "Performance"): two gateway nodes on Redis + Postgres, every
# wedding's clients spread over both nodes, at two load levels. Both nodes share core 0, the
# load generator has core 1 (taskset). Uses the machine's Redis and Postgres with a schema and
# a channel prefix of its own, dropped at the end.
# Usage: bash loadtest/perf_cluster.sh [OUT_DIR]   (from the repository root, after `make install`)
set -euo pipefail
OUT=${1:-/tmp/wedsync-perf-cluster}
PY=${PY:-.venv/bin/python}
DURATION=${DURATION:-20}
DB=${GATEWAY_PERF_DATABASE_URL:-postgresql://127.0.0.1:5432/test}
REDIS=${GATEWAY_PERF_REDIS_URL:-redis://127.0.0.1:6379/0}
RUN=perf$$
mkdir -p "$OUT"
export GATEWAY_DATABASE_URL=$DB GATEWAY_DATABASE_SCHEMA=$RUN GATEWAY_REDIS_URL=$REDIS \
  GATEWAY_REDIS_PREFIX=$RUN GATEWAY_LOG_LEVEL=warning
.venv/bin/gateway migrate >/dev/null
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  "$PY" - "$DB" "$RUN" <<'PYEOF'
import asyncio, sys, asyncpg
async def main(dsn, schema):
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()
asyncio.run(main(*sys.argv[1:]))
PYEOF
}
trap cleanup EXIT

# shellcheck source=/dev/null
source "$(dirname "${BASH_SOURCE[0]}")/wait_port.sh"

declare -A LOADS=(
  [cluster-200]="--scenario steady --weddings 50 --clients 4 --rate 1"
  [cluster-800]="--scenario steady --weddings 100 --clients 4 --rate 2"
)
for name in cluster-200 cluster-800; do
  PIDS=()
  URLS=()
  for node in a b; do
    port=$((20000 + RANDOM % 20000))
    GATEWAY_NODE_ID=$node GATEWAY_DATA_DIR=$(mktemp -d) GATEWAY_PORT=$port taskset -c 0 \
      .venv/bin/gateway serve >"$OUT/$name-$node.log" 2>&1 &
    PIDS+=($!)
    URLS+=(--url "ws://127.0.0.1:$port/ws")
    wait_port "$port"
  done
  echo "== $name on nodes ${PIDS[*]} (core 0), generator on core 1"
  # shellcheck disable=SC2086
  taskset -c 1 "$PY" -m loadtest run "${URLS[@]}" ${LOADS[$name]} --duration "$DURATION" \
    --workers 1 --server-pid "${PIDS[0]}" --report "$OUT/$name.json" --quiet || echo "exit $?"
  kill "${PIDS[@]}"; wait "${PIDS[@]}" 2>/dev/null || true
done
"$PY" -m loadtest compare "$OUT"/cluster-*.json | tee "$OUT/summary.md"
