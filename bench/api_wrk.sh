#!/bin/sh
# Load test of the northbound API: GET /api/v1/links (germany50: 50 KMs, 88 links, live pools
# from one agent hosting every KM) with a viewer token, 10 s per connection count, with wrk.
#   bench/api_wrk.sh [BUILD_DIR]        (default: build)
# Env: CONNECTIONS="10 50 100"  DURATION=10s  THREADS=2
# Goal: >= 20,000 requests/s and p99 < 5 ms.
# Besides wrk's figures, "cpu us/req" is the controller's CPU time (user + system, from
# /proc/PID/stat) per request served: it depends much less than requests/s on what else the
# machine is running, so it compares builds fairly on a shared machine.
# A last "RESULT key=value ..." line per connection count is for scripts (bench/run-all.sh).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
controller=$build/controller/qkdn-controller
agent=$build/southbound/qkdn-agent
topology=$root/tests/data/topologies/germany50.json
connections=${CONNECTIONS:-10 50 100}
duration=${DURATION:-10s}
threads=${THREADS:-2}
for b in "$controller" "$agent"; do
  [ -x "$b" ] || { echo "$0: $b not built (cmake --build $build)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "$0: wrk not installed (apt-get install wrk)" >&2; exit 1; }
command -v curl >/dev/null || { echo "$0: curl not installed" >&2; exit 1; }

dir=$(mktemp -d)
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

line=$("$root/scripts/make-token.sh" bench viewer)
token=$(echo "$line" | sed -n 's/^token: //p')
echo "$line" | tail -1 >"$dir/tokens"

wait_file() {
  i=0
  while [ ! -s "$1" ]; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "$0: $1 not written; logs in $dir" >&2; cat "$dir"/*.log >&2; exit 1; }
    sleep 0.1
  done
}

"$controller" --topology "$topology" --ck-listen 127.0.0.1:0 --port-file "$dir/ck.port" \
  --insecure-ck --api-listen 127.0.0.1:0 --api-port-file "$dir/api.port" \
  --api-tokens "$dir/tokens" 2>"$dir/controller.log" &
controller_pid=$!
pids="$pids $controller_pid"
wait_file "$dir/ck.port"
wait_file "$dir/api.port"
ck_port=$(cat "$dir/ck.port")
api_port=$(cat "$dir/api.port")
"$agent" --topology "$topology" --all --controller "127.0.0.1:$ck_port" --insecure-ck \
  --insecure-kma 2>"$dir/agent.log" &
pids="$pids $!"

url="http://127.0.0.1:$api_port/api/v1/links"
links=$(grep -o '"link_id"' "$topology" | wc -l)
i=0
while :; do
  up=$(curl -s -H "Authorization: Bearer $token" "$url" | grep -o '"oper_state":"up"' | wc -l)
  [ "$up" -ge "$links" ] && break
  i=$((i + 1))
  [ $i -lt 150 ] || { echo "$0: only $up of $links links up after 15 s" >&2; exit 1; }
  sleep 0.1
done
bytes=$(curl -s -H "Authorization: Bearer $token" "$url" | wc -c)
echo "germany50: $links links up, GET /api/v1/links = $bytes bytes; wrk $duration, $threads threads"
echo
ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$controller_pid/stat"; }
printf '%-12s %14s %10s %10s %10s %12s %10s\n' connections "requests/s" p50 p90 p99 "cpu us/req" \
  errors
results=""
for c in $connections; do
  before=$(cpu_ticks)
  out=$(wrk -t"$threads" -c"$c" -d"$duration" --latency -H "Authorization: Bearer $token" "$url")
  after=$(cpu_ticks)
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  cpu=$(awk -v t=$((after - before)) -v hz="$ticks" -v n="$total" \
    'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "-" }')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p90=$(echo "$out" | awk '$1 == "90%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {sub(/^ +/, ""); printf "%s; ", $0}')
  printf '%-12s %14s %10s %10s %10s %12s %10s\n' "$c" "$rps" "$p50" "$p90" "$p99" "$cpu" \
    "${errs:-0}"
  nerr=$(echo "$out" | awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }')
  results="$results
RESULT connections=$c requests_per_s=$rps p50=$p50 p90=$p90 p99=$p99 cpu_us=$cpu errors=$nerr"
done
echo
# One line per connection count for scripts (bench/run-all.sh); latencies as wrk prints them.
echo "$results" | sed '/^$/d'
