#!/usr/bin/env bash
# Instructions per edit of loadtest/bench_hotpath.py, counted by callgrind: the same for the
# same code whatever the machine is doing. A --dry run (set-up and the clients making their
# edits, none received by the node) is subtracted from a real one.
# Usage: bash loadtest/callgrind_hotpath.sh [EDITS]   (from the repository root, after make install)
# PY=/path/to/venv/bin/python runs another tree's code from its root (README "Metrics": before).
set -euo pipefail
N=${1:-3000}
PY=${PY:-.venv/bin/python}
count() {
  PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$PY" \
    -m loadtest.bench_hotpath --edits "$N" "$@" 2>&1 >/dev/null | sed -n 's/.*Collected : //p'
}
dry=$(count --dry)
real=$(count)
echo "instructions per edit: $(( (real - dry) / N )) ($N edits; $real, dry $dry)"
