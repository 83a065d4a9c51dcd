#!/bin/sh
# Runs every benchmark and rewrites docs/PERFORMANCE.md with the figures, their goals and
# baselines, and a plot of relayed keys/s and p99 against clients and hops (issue 15).
#   bench/run-all.sh [BUILD_DIR]        (default: build; builds nothing, checks the binaries)
# Env: QUICK=1 (a few minutes: short durations, small sweeps; writes into the results folder,
#      not docs/), ONLY=name,name / SKIP=name,name (steps: codec roundtrip routing demand store
#      relay-mem relay-pg api agent-scale controller-scale), RESULTS=DIR (raw outputs, default
#      bench-results/<UTC time>), DOC=FILE, PLOT=FILE. The plot needs gnuplot (gnuplot-nox).
# A full run takes about half an hour; run it on a quiet machine (the document records the
# load average before and after).
set -eu
command -v python3 >/dev/null || { echo "$0: python3 not installed" >&2; exit 1; }
exec python3 "$(dirname "$0")/run_all.py" "$@"
