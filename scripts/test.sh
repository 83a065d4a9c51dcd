#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (CTest labels unit, integration, e2e).
# Usage: scripts/test.sh [ctest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
# Fuzzing (issue 13): the libFuzzer targets under ASan + UBSan, a fixed seed and number of runs
# each (reproducible: the same code gives the same verdict here and in CI).
"$root/scripts/fuzz.sh" "$root/build-fuzz"
cd "$root/build"
ctest --output-on-failure --timeout 600 -j 2 "$@"
