#!/bin/sh
# Agent scale (issue 15): one qkdn-agent process hosting every KM of a generated metro network
# (KMS KMs, LINKS links at RATE b/s each, default 1,000 KMs and 2,613 links at 100 kbit/s) with a
# real controller. Measures the agent's memory and CPU while the key pools fill and once they
# are full.
#   bench/agent_scale.sh [BUILD_DIR]        (default: build)
# Env:
#   KMS=1000 LINKS=2613 RATE=100000 POOL_BYTES=262144 (--pool-capacity-bytes, the default)
#   AGENT=path       the qkdn-agent binary to measure (default BUILD_DIR/southbound/qkdn-agent):
#                    point it at another build (e.g. main's) for a before/after in one run
#   THREADS=2        --threads of the agent
#   WINDOW=20        seconds of each measurement window
#   UP_TIMEOUT=180   seconds for every link to come up
#   MAX_RSS_MB=6144  the agent is stopped (and the row marked) beyond this RSS: protects a shared
#                    machine from a run-away baseline
#   KEEP=1           keep the temp dir (logs)
# Output: one line per phase (links up; filling: the first WINDOW s after every link is up;
# full: WINDOW s once every pool is full, or after 3 x WINDOW s of filling), with the agent's RSS
# (VmRSS), peak RSS (VmHWM), CPU as % of one core (user + system, /proc/PID/stat), stored keys
# (sum over link ends, from the agent's /admin/state), and a last line "RESULT ..." for scripts.
# Goal (issue 15): thousands of links per process at metro rates use little CPU, memory O(1) per
# link plus keys in use.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
controller=$build/controller/qkdn-controller
agent=${AGENT:-$build/southbound/qkdn-agent}
kms=${KMS:-1000}
links=${LINKS:-2613}
rate=${RATE:-100000}
pool_bytes=${POOL_BYTES:-262144}
threads=${THREADS:-2}
window=${WINDOW:-20}
up_timeout=${UP_TIMEOUT:-180}
max_rss_mb=${MAX_RSS_MB:-6144}
for b in "$controller" "$agent"; do
  [ -x "$b" ] || { echo "$0: $b not built (cmake --build $build)" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "$0: curl not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "$0: python3 not installed" >&2; exit 1; }
[ "$links" -ge "$kms" ] || { echo "$0: LINKS must be at least KMS (a ring plus chords)" >&2; exit 2; }

dir=$(mktemp -d)
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
trap 'echo signal >&2; exit 130' INT TERM

fail() {
  echo "$0: $*; logs:" >&2
  for f in "$dir"/*.log; do echo "== $f" >&2; tail -20 "$f" >&2; done
  exit 1
}

wait_file() {
  wf=0
  while [ ! -s "$1" ]; do
    wf=$((wf + 1))
    [ $wf -lt 600 ] || fail "$1 not written"
    sleep 0.1
  done
}

# The network: a ring of KMS KMs plus LINKS - KMS chords between KMs close on the ring (metro
# distances), seeded, one SAE per KM.
python3 "$root/bench/metro_topology.py" "$kms" "$links" "$rate" agent-scale >"$dir/topology.json"

"$controller" --topology "$dir/topology.json" --ck-listen 127.0.0.1:0 --port-file "$dir/ck.port" \
  --insecure-ck 2>"$dir/controller.log" &
pids="$pids $!"
wait_file "$dir/ck.port"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
start=$(date +%s.%N)
"$agent" --topology "$dir/topology.json" --all --controller "127.0.0.1:$(cat "$dir/ck.port")" \
  --insecure-ck --insecure-kma --pool-capacity-bytes "$pool_bytes" --threads "$threads" \
  --admin-listen 127.0.0.1:0 --admin-port-file "$dir/admin.port" --log-level warn \
  >"$dir/agent.out" 2>"$dir/agent.log" &
agent_pid=$!
pids="$pids $agent_pid"
wait_file "$dir/admin.port"
admin="http://127.0.0.1:$(cat "$dir/admin.port")/admin/state"

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$agent_pid/stat"; }
rss_kb() { awk -v k="$1" '$1 == k ":" { print $2 }' "/proc/$agent_pid/status"; }
# "links_up stored_keys full_link_ends link_ends" from the agent's admin state.
state() {
  curl -s --max-time 30 "$admin" | python3 -c '
import json, sys
try:
    kms = json.load(sys.stdin)
except Exception:
    print("0 0 0 0"); sys.exit()
kms = kms.get("kms", kms) if isinstance(kms, dict) else kms
up = stored = full = ends = 0
for km in kms:
    for l in km.get("links", []):
        ends += 1
        up += 1 if l.get("state") == "up" else 0
        stored += l.get("stored_keys", 0)
        full += 1 if l.get("stored_key_bits", 0) >= l.get("capacity_bits", 1) * 0.98 else 0
print(up // 2, stored, full, ends)'
}
check_rss() {
  r=$(rss_kb VmRSS)
  if [ "$((r / 1024))" -gt "$max_rss_mb" ]; then
    echo "RSS $((r / 1024)) MiB above MAX_RSS_MB=$max_rss_mb: stopping the agent" >&2
    return 1
  fi
  return 0
}
row() { printf '%-10s %8s %10s %10s %8s %12s %s\n' "$@"; }

echo "agent: $agent"
echo "network: $kms KMs, $links links at $rate b/s, pools $pool_bytes B per link end, $threads threads"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
row phase seconds "RSS MiB" "peak MiB" "CPU %" "stored keys" note

# Phase 1: every link up.
while :; do
  set -- $(state)
  now=$(date +%s.%N)
  el=$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
  [ "$1" -ge "$links" ] && break
  kill -0 "$agent_pid" 2>/dev/null || fail "the agent exited"
  if ! check_rss; then
    # CPU since start as % of one core, for the record.
    cpu=$(awk -v c="$(cpu_ticks)" -v hz="$ticks" -v e="$el" 'BEGIN { printf "%.1f", 100 * c / hz / e }')
    row up "$el" "$(($(rss_kb VmRSS) / 1024))" "$(($(rss_kb VmHWM) / 1024))" "$cpu" "$2" "STOPPED: RSS limit, $1 of $links links up"
    echo "RESULT links=$links rss_mib=$(($(rss_kb VmRSS) / 1024)) stopped_after_s=$el cpu_pct=$cpu links_up=$1"
    exit 1
  fi
  awk -v e="$el" -v t="$up_timeout" 'BEGIN { exit !(e > t) }' && fail "after $el s only $1 of $links links up"
  echo "  $el s: $1 of $links links up" >&2
  sleep 2
done
row up "$el" "$(($(rss_kb VmRSS) / 1024))" "$(($(rss_kb VmHWM) / 1024))" - "$2" "every link up"

measure() { # NAME: one window; prints a row, sets last_cpu and last_keys
  phase=$1
  c0=$(cpu_ticks)
  t0=$(date +%s.%N)
  stopped=""
  i=0
  while [ $i -lt "$window" ]; do
    sleep 1
    i=$((i + 1))
    check_rss || { stopped="STOPPED: RSS limit"; break; }
  done
  c1=$(cpu_ticks)
  t1=$(date +%s.%N)
  set -- $(state)
  last_keys=$2
  last_full=$3
  last_ends=$4
  last_cpu=$(awk -v c=$((c1 - c0)) -v hz="$ticks" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 100 * c / hz / (b - a) }')
  row "$phase" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" "$(($(rss_kb VmRSS) / 1024))" \
    "$(($(rss_kb VmHWM) / 1024))" "$last_cpu" "$last_keys" "$last_full of $last_ends link ends full $stopped"
  [ -z "$stopped" ]
}

measure filling || exit 1
fill_cpu=$last_cpu
n=1
while [ "$last_full" -lt "$last_ends" ] && [ $n -lt 3 ]; do
  measure filling || exit 1
  n=$((n + 1))
done
measure full || exit 1
rss=$(($(rss_kb VmRSS) / 1024))
peak=$(($(rss_kb VmHWM) / 1024))
per_link=$(awk -v r="$rss" -v l="$links" 'BEGIN { printf "%.1f", r * 1024 / l }')
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "RESULT links=$links rss_mib=$rss peak_mib=$peak kib_per_link=$per_link cpu_fill_pct=$fill_cpu cpu_full_pct=$last_cpu stored_keys=$last_keys"
kill -0 "$agent_pid" 2>/dev/null || fail "the agent exited during the bench"
