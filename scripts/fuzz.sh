#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, only the sources each reads) and runs each
# on its committed corpus (tests/fuzz/corpus/<target>). New inputs go to a scratch folder, never
# into the repository. A finding stops the script with the input saved; turn it into a regression
# test by fixing the bug and committing the input as tests/fuzz/corpus/<target>/crash-<what> (the
# corpus replay test of the normal suite runs it).
#
# Two modes:
# - regression (no seconds given; CI): a fixed seed and a fixed number of runs per target
#   (QKDN_FUZZ_RUNS, default 300000, about 10-25 s each here), so the same code gives the same
#   verdict on every machine and every run; a CI failure is reproducible with the same command.
# - exploration (seconds given, or QKDN_FUZZ_SECONDS): a random seed for that long per target,
#   to find new inputs before CI does. Run it on every change to a parser.
# Usage: scripts/fuzz.sh [build-dir] [seconds-per-target]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-fuzz}
seconds=${2:-${QKDN_FUZZ_SECONDS:-}}
targets=(ck kma etsi topology northbound)
if [ -n "$seconds" ]; then
  budget=(-max_total_time="$seconds")
  mode="for ${seconds}s (random seed)"
else
  runs=${QKDN_FUZZ_RUNS:-300000}
  budget=(-seed=1 -runs="$runs")
  mode="for $runs runs (seed 1)"
fi

if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DQKDN_FUZZ=ON >/dev/null
fi
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=1
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/#/fuzz_}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "$build/fuzz-findings/$t"
  echo "fuzz: $t $mode"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$build/tests/fuzz_$t" "${budget[@]}" -timeout=10 -rss_limit_mb=2048 \
      -max_len=70000 -print_final_stats=1 -artifact_prefix="$build/fuzz-findings/$t/" \
      "$scratch/$t" "$root/tests/fuzz/corpus/$t" >"$build/fuzz-$t.log" 2>&1; then
    echo "fuzz: $t FOUND A PROBLEM (log: $build/fuzz-$t.log, input in $build/fuzz-findings/$t/)"
    tail -n 40 "$build/fuzz-$t.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$build/fuzz-$t.log" |
      sed "s/^/fuzz: $t /"
  fi
done
exit $status
