#!/usr/bin/env bash
# Installs the Debian 12 packages the project needs, only those that are missing.
# Usage: scripts/install-deps.sh   (as root, or with sudo available)
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libboost1.81-dev libboost-graph1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev openssl libpqxx-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  postgresql-15 postgresql-client-15 prometheus
  python3 python3-requests python3-yaml python3-jsonschema python3-websocket python3-pil
  python3-cryptography # e2e_wrap: an unwrap independent of qkdn-unwrap
  chromium wrk clang-format clang-tidy curl procps faketime
  gnuplot-nox # bench/run-all.sh: the relay plot in docs/PERFORMANCE.md
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The postgresql package starts a cluster service on Debian; the project runs private servers.
echo "install-deps: done"
