#!/usr/bin/env bash
# Where the gateway's time goes under steady-1000 (loadtest/README.md "Profile"): py-spy samples
# the embedded gateway (pinned to core 0) while the kit drives it from core 1, then
# loadtest/profile_summary.py sorts the samples into the parts of an edit's path.
# Usage: bash loadtest/profile.sh [OUT_DIR]   (from the repository root, after `make install`)
set -euo pipefail
OUT=${1:-/tmp/wedsync-profile}
PY=${PY:-.venv/bin/python}
DURATION=${DURATION:-20}
LOAD=${LOAD:---scenario steady --weddings 200 --clients 5 --rate 2}
mkdir -p "$OUT"
port=$((20000 + RANDOM % 20000))
GATEWAY_DATA_DIR=$(mktemp -d) GATEWAY_PORT=$port taskset -c 0 .venv/bin/gateway serve \
  >"$OUT/gateway.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
# shellcheck disable=SC2086
taskset -c 1 "$PY" -m loadtest run --url "ws://127.0.0.1:$port/ws" $LOAD --duration "$DURATION" \
  --workers 1 --server-pid "$pid" --report "$OUT/run.json" --quiet --no-plots &
load=$!
sleep 5  # past the connections and initial syncs: sample the steady load only
.venv/bin/py-spy record --pid "$pid" --duration $((DURATION - 7)) --rate 250 --nonblocking --gil \
  --format raw --output "$OUT/stacks.txt" >/dev/null
wait $load || echo "run exited with $?"
"$PY" -m loadtest.profile_summary "$OUT/stacks.txt" "$OUT/run.json" | tee "$OUT/summary.md"
