#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (CTest labels unit, integration, e2e).
# Usage: scripts/test.sh [ctest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" "$root/build"
cd "$root/build"
ctest --output-on-failure --timeout 600 -j 2 "$@"
