#!/usr/bin/env bash
# The cost of the metrics on the hot path (README "Metrics"): steady-1000 against the embedded
# gateway built from this tree ("after") and from another commit ("before", default the commit
# before the metrics), alternating ROUNDS times, each on a fresh server pinned to core 0 with
# the generator on core 1 (as loadtest/perf.sh). "before" runs this virtualenv with the other
# commit's gateway/ first on PYTHONPATH, and this tree's compiled guard (its source is the same).
# The data directory is on /dev/shm: the CPU cost is measured, not the disk of a shared machine.
# Usage: bash loadtest/perf_metrics.sh [BEFORE_COMMIT] [OUT_DIR]   (after `make install`)
# AFTER=COMMIT runs that commit's gateway/ as "after" too (default: this tree's). Each commit's
# update guard is compiled from its own source (tools/compile_guard.py --root), as `make
# install` compiles this tree's; COMPILED=DIR takes both from DIR/gateway/core instead.
set -euo pipefail
BEFORE=${1:-284c60c}
OUT=${2:-/tmp/wedsync-perf-metrics}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-20}
PY=.venv/bin/python
LOAD="--scenario steady --weddings 200 --clients 5 --rate 2"
mkdir -p "$OUT"
BASE=$(mktemp -d)
compiled() {  # the update guard of the tree in $1, compiled (or taken from COMPILED)
  if [ -n "${COMPILED:-}" ]; then
    cp "$COMPILED"/gateway/core/*.so "$1/gateway/core/"
  else
    "$PY" tools/compile_guard.py --root "$1" >/dev/null
  fi
}
git archive "$BEFORE" gateway | tar -x -C "$BASE"
compiled "$BASE"
AFTER_TREE=""
if [ -n "${AFTER:-}" ]; then
  AFTER_TREE=$(mktemp -d)
  git archive "$AFTER" gateway | tar -x -C "$AFTER_TREE"
  compiled "$AFTER_TREE"
fi

# shellcheck source=/dev/null
source "$(dirname "${BASH_SOURCE[0]}")/wait_port.sh"

for round in $(seq "$ROUNDS"); do
  for build in before after; do
    port=$((20000 + RANDOM % 20000))
    pythonpath=$AFTER_TREE
    [ "$build" = before ] && pythonpath=$BASE
    data=$(mktemp -d -p /dev/shm)
    PYTHONPATH=$pythonpath GATEWAY_DATA_DIR=$data GATEWAY_PORT=$port taskset -c 0 \
      .venv/bin/gateway serve >"$OUT/$build-$round-server.log" 2>&1 &
    pid=$!
    wait_port "$port"
    echo "== steady-1000, $build, round $round (pid $pid)"
    # shellcheck disable=SC2086
    taskset -c 1 "$PY" -m loadtest run --url "ws://127.0.0.1:$port/ws" $LOAD \
      --duration "$DURATION" --workers 1 --server-pid "$pid" \
      --report "$OUT/steady-1000-$build-$round.json" --quiet || echo "run exited with $?"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$data"
  done
done
rm -rf "$BASE" "$AFTER_TREE"
"$PY" -m loadtest compare "$OUT"/*.json | tee "$OUT/summary.md"
