#!/bin/sh
# Controller scale (issue 15): one qkdn-controller and AGENTS qkdn-agent processes hosting KMS KMs
# of a generated metro network between them (LINKS links, a ring plus chords, one SAE per KM).
# Measures what an operator of a large network sees from the controller:
#   register  seconds from the agents' start until every KM is registered (health: kms.connected),
#             and the controller's CPU seconds until then
#   links     seconds until every link is up (both ends reported it)
#   steady    the controller's CPU (% of one core) and RSS over WINDOW s with status reports
#             every STATUS_MS
#   metrics   wall time of GET /metrics (best and worst of 5) and its size
#   route     GET /api/v1/routes between seeded random pairs: p50 / p99 over ROUTES queries, and
#             the controller's CPU per query (status processing included: an upper bound)
# Latencies depend on what else the machine runs; CPU figures much less.
#   RESULT    one line for scripts (bench/run-all.sh)
#   bench/controller_scale.sh [BUILD_DIR]        (default: build)
# Env:
#   KMS=10000 LINKS=20000 AGENTS=4 RATE=100000 STATUS_MS=1000 WINDOW=20 ROUTES=500
#   REGISTER_TIMEOUT=300 (s)  UP_TIMEOUT=600 (s)  KEEP=1 (keep the temp dir with the logs)
#   LOG_LEVEL=warn (the controller's --log-level)
#   SMOKE=1: exit non-zero unless every KM registered within REGISTER_BOUND s (default 60) and
#            the controller is still alive at the end (the CI scale smoke test)
# Goals (issue 15, this 2-core machine): 10,000 KMs registered within 30 s; controller RSS under
# 1 GiB; steady controller CPU under 25 % of one core with status every second; /metrics under 1 s;
# route query p99 under 5 ms through the API.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
controller=$build/controller/qkdn-controller
agent=$build/southbound/qkdn-agent
kms=${KMS:-10000}
links=${LINKS:-20000}
nagents=${AGENTS:-4}
rate=${RATE:-100000}
status_ms=${STATUS_MS:-1000}
window=${WINDOW:-20}
routes=${ROUTES:-500}
register_timeout=${REGISTER_TIMEOUT:-300}
up_timeout=${UP_TIMEOUT:-600}
smoke=${SMOKE:-}
register_bound=${REGISTER_BOUND:-60}
for b in "$controller" "$agent"; do
  [ -x "$b" ] || { echo "$0: $b not built (cmake --build $build)" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "$0: curl not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "$0: python3 not installed" >&2; exit 1; }
[ "$links" -ge "$kms" ] || { echo "$0: LINKS must be at least KMS (a ring plus chords)" >&2; exit 2; }
[ "$nagents" -ge 1 ] && [ "$nagents" -le "$kms" ] || { echo "$0: AGENTS must be 1..KMS" >&2; exit 2; }

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
  echo "RESULT failed=1 reason=\"$*\""
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
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# The network: a ring of KMS KMs plus LINKS - KMS chords between KMs close on the ring (metro
# distances), seeded, one SAE per KM. Agent i hosts the i-th contiguous segment of the ring, so
# most links are inside one process and the rest cross processes over KMA TCP.
python3 "$root/bench/metro_topology.py" "$kms" "$links" "$rate" controller-scale \
  --agents "$nagents" --args-dir "$dir" >"$dir/topology.json"

line=$("$root/scripts/make-token.sh" bench viewer)
token=$(echo "$line" | sed -n 's/^token: //p')
echo "$line" | tail -1 >"$dir/tokens"

"$controller" --topology "$dir/topology.json" --ck-listen 127.0.0.1:0 --port-file "$dir/ck.port" \
  --insecure-ck --api-listen 127.0.0.1:0 --api-port-file "$dir/api.port" --api-tokens "$dir/tokens" \
  --status-interval-ms "$status_ms" --log-level "${LOG_LEVEL:-warn}" 2>"$dir/controller.log" &
controller_pid=$!
pids="$pids $controller_pid"
wait_file "$dir/ck.port"
wait_file "$dir/api.port"
api="http://127.0.0.1:$(cat "$dir/api.port")"

ticks=$(getconf CLK_TCK)
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$controller_pid/stat"; }
rss_mib() { awk '$1 == "VmRSS:" { print int($2 / 1024) }' "/proc/$controller_pid/status"; }
hwm_mib() { awk '$1 == "VmHWM:" { print int($2 / 1024) }' "/proc/$controller_pid/status"; }
alive() { kill -0 "$controller_pid" 2>/dev/null || fail "the controller exited"; }
# "connected links_up" from /api/v1/health.
health() {
  curl -s --max-time 30 -H "Authorization: Bearer $token" "$api/api/v1/health" | python3 -c '
import json, sys
try:
    h = json.load(sys.stdin)
    print(h["kms"]["connected"], h["links"]["up"])
except Exception:
    print("0 0")'
}

echo "controller: $controller"
echo "network: $kms KMs, $links links at $rate b/s, $nagents agent processes, status every $status_ms ms"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
start=$(now)
a=0
while [ $a -lt "$nagents" ]; do
  # shellcheck disable=SC2046 # the KM list is one word per argument by design
  "$agent" --topology "$dir/topology.json" $(cat "$dir/agent$a.args") \
    --controller "127.0.0.1:$(cat "$dir/ck.port")" --insecure-ck --insecure-kma --threads 2 \
    --log-level warn >"$dir/agent$a.out" 2>"$dir/agent$a.log" &
  pids="$pids $!"
  a=$((a + 1))
done

# Phase 1: every KM registered.
while :; do
  set -- $(health)
  el=$(since "$start")
  [ "$1" -ge "$kms" ] && break
  alive
  awk -v e="$el" -v t="$register_timeout" 'BEGIN { exit !(e > t) }' &&
    fail "after $el s only $1 of $kms KMs registered"
  echo "  $el s: $1 of $kms KMs registered, $2 links up" >&2
  sleep 0.5
done
register_s=$el
register_rss=$(rss_mib)
register_cpu=$(awk -v c="$(cpu_ticks)" -v hz="$ticks" 'BEGIN { printf "%.1f", c / hz }')
echo "register: $register_s s for $kms KMs (controller CPU $register_cpu s so far, RSS $register_rss MiB)"
# The churn of registration: Register frames received (one per KM without churn), Registers
# answered NG busy, registrations abandoned (the connection closed while it waited: "internal")
# and connections closed at their registration deadline ("establish_timeout").
churn() {
  curl -s --max-time 60 -H "Authorization: Bearer $token" "$api/metrics" | awk '
    /^qkdn_ck_messages_total\{/ && /direction="in/ && /command="register"/ { reg += $NF }
    /^qkdn_ck_refused_total\{/ && /reason="registration_busy"/ { busy += $NF }
    /^qkdn_ck_protocol_errors_total\{/ && /reason="internal"/ { abandoned += $NF }
    /^qkdn_ck_protocol_errors_total\{/ && /reason="establish_timeout"/ { timeout += $NF }
    END { printf "%d %d %d %d\n", reg, busy, abandoned, timeout }'
}
set -- $(churn)
register_frames=$1
register_busy=$2
register_abandoned=$3
register_timeouts=$4
echo "register churn: $register_frames Register frames for $kms KMs, $register_busy answered NG busy, $register_abandoned abandoned while waiting, $register_timeouts connections closed at the registration deadline"
if [ -n "$smoke" ]; then
  awk -v e="$register_s" -v t="$register_bound" 'BEGIN { exit !(e > t) }' &&
    fail "registration took $register_s s, more than REGISTER_BOUND=$register_bound s"
fi

# Phase 2: every link up.
while :; do
  set -- $(health)
  el=$(since "$start")
  [ "$2" -ge "$links" ] && break
  alive
  awk -v e="$el" -v t="$up_timeout" 'BEGIN { exit !(e > t) }' && fail "after $el s only $2 of $links links up"
  echo "  $el s: $2 of $links links up" >&2
  sleep 1
done
links_s=$el
echo "links: $links_s s until $links links up"

# Phase 3: steady state.
c0=$(cpu_ticks)
t0=$(now)
sleep "$window"
alive
c1=$(cpu_ticks)
steady_cpu=$(awk -v c=$((c1 - c0)) -v hz="$ticks" -v a="$t0" -v b="$(now)" \
  'BEGIN { printf "%.1f", 100 * c / hz / (b - a) }')
steady_cpu_s=$(awk -v c=$((c1 - c0)) -v hz="$ticks" 'BEGIN { printf "%.2f", c / hz }')
rss=$(rss_mib)
peak=$(hwm_mib)
echo "steady: controller CPU $steady_cpu % of one core over $window s ($steady_cpu_s CPU s), RSS $rss MiB (peak $peak MiB)"

# Phase 4: /metrics.
best=""
worst=0
i=0
while [ $i -lt 5 ]; do
  t=$(curl -s -o "$dir/metrics.txt" -w '%{time_total}' --max-time 60 -H "Authorization: Bearer $token" \
    "$api/metrics")
  [ -s "$dir/metrics.txt" ] || fail "GET /metrics answered nothing"
  best=$(awk -v a="${best:-$t}" -v b="$t" 'BEGIN { print (b < a ? b : a) }')
  worst=$(awk -v a="$worst" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
  i=$((i + 1))
done
metrics_kib=$(($(wc -c <"$dir/metrics.txt") / 1024))
echo "metrics: GET /metrics best $best s, worst $worst s, $metrics_kib KiB"

# Phase 5: route queries through the API, one keep-alive connection.
c0=$(cpu_ticks)
route=$(python3 - "$(cat "$dir/api.port")" "$token" "$dir/route-pairs" "$routes" <<'EOF'
import http.client, sys, time
port, token, pairs_file, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
pairs = [l.split() for l in open(pairs_file)]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
lat, found = [], 0
for i in range(n):
    s, d = pairs[i % len(pairs)]
    t = time.perf_counter()
    conn.request("GET", "/api/v1/routes?src=%s&dst=%s" % (s, d), headers={"Authorization": "Bearer " + token})
    r = conn.getresponse()
    body = r.read()
    lat.append(time.perf_counter() - t)
    if r.status != 200:
        print("error status %d: %s" % (r.status, body[:200]), file=sys.stderr)
        sys.exit(1)
    found += 1 if b'"hops"' in body else 0
lat.sort()
print("%.2f %.2f %d" % (lat[len(lat) // 2] * 1e3, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, found))
EOF
) || fail "route queries failed"
c1=$(cpu_ticks)
set -- $route
route_cpu=$(awk -v c=$((c1 - c0)) -v hz="$ticks" -v n="$routes" 'BEGIN { printf "%.0f", c * 1e6 / hz / n }')
echo "route: p50 $1 ms, p99 $2 ms over $routes queries ($3 with a route); controller CPU $route_cpu us per query (with status reports going on)"
alive
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "RESULT kms=$kms links=$links register_s=$register_s register_cpu_s=$register_cpu register_frames=$register_frames register_busy=$register_busy register_abandoned=$register_abandoned register_timeouts=$register_timeouts links_up_s=$links_s steady_cpu_pct=$steady_cpu steady_cpu_s=$steady_cpu_s rss_mib=$rss peak_mib=$peak metrics_best_s=$best metrics_worst_s=$worst metrics_kib=$metrics_kib route_p50_ms=$1 route_p99_ms=$2 route_cpu_us=$route_cpu"
