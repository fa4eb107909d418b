#!/usr/bin/env bash
# The cost of role + schema enforcement under load (README "Performance"): the same steady loads
# against this checkout's gateway and against BASE (default: the commit before enforcement),
# one fresh server per run, server on core 0, generator on core 1, alternating A/B/A/B.
# Usage: bash loadtest/perf_enforcement.sh [OUT_DIR] [BASE_COMMIT]   (after `make install`)
set -euo pipefail
OUT=${1:-/tmp/wedsync-enforcement}
BASE=${2:-d376ca5}
PY=${PY:-$PWD/.venv/bin/python}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
BASE_TREE="$OUT/base-tree"
[ -d "$BASE_TREE" ] || git worktree add --detach "$BASE_TREE" "$BASE" >/dev/null

declare -A LOADS=(
  [steady-200]="--scenario steady --weddings 50 --clients 4 --rate 1"
  [steady-1000]="--scenario steady --weddings 200 --clients 5 --rate 2"
)

# shellcheck source=/dev/null
source "$(dirname "${BASH_SOURCE[0]}")/wait_port.sh"

for round in $(seq "$ROUNDS"); do
  for name in steady-200 steady-1000; do
    for build in enforcing base; do
      port=$((20000 + RANDOM % 20000))
      source_dir=$PWD
      [ "$build" = base ] && source_dir=$BASE_TREE
      # run from the source tree: `python -m` imports the package of the working directory
      (cd "$source_dir" && GATEWAY_DATA_DIR=$(mktemp -d) GATEWAY_PORT=$port PYTHONPATH=$source_dir \
        exec taskset -c 0 "$PY" -m gateway serve) >"$OUT/$build-server.log" 2>&1 &
      pid=$!
      wait_port "$port"
      echo "== round $round: $name on $build (pid $pid)"
      # shellcheck disable=SC2086
      taskset -c 1 "$PY" -m loadtest run --url "ws://127.0.0.1:$port/ws" ${LOADS[$name]} \
        --duration "$DURATION" --workers 1 --server-pid "$pid" \
        --report "$OUT/$name-$build-$round.json" --quiet || echo "run exited with $?"
      kill "$pid"; wait "$pid" 2>/dev/null || true
    done
  done
done
"$PY" -m loadtest compare "$OUT"/*.json | tee "$OUT/summary.md"
