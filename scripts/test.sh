#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (CTest labels unit, integration, e2e).
# Usage: scripts/test.sh [ctest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
# Fuzzing (issue 13): the libFuzzer targets, each for a bounded time, under ASan + UBSan.
"$root/scripts/fuzz.sh" "$root/build-fuzz" "${QKDN_FUZZ_SECONDS:-25}"
cd "$root/build"
ctest --output-on-failure --timeout 600 -j 2 "$@"
