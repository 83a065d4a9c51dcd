#!/bin/sh
# End-to-end ETSI GS QKD 014 key supply through relays (issue 4): requests/s, keys/s and latency
# of GET /api/v1/keys/SAE-KM<h>/enc_keys from SAE-KM0 for h = 1, 3, 6 hops, with wrk.
#   bench/relay_wrk.sh [BUILD_DIR]        (default: build)
# Topology: a line KM0 - KM1 - ... - KM6, one SAE per KM (SAE-KM<i>), every link at RATE b/s
# with POOL_BYTES of key per link end, so the pools are not the limit. 1 hop is the adjacent
# pair (link keys sent directly over the KMA link, no controller); 3 and 6 hops are relays
# (0x1403 -> per-hop 0x410A/0x410C reservation and allocation by the controller -> 0x4104 ->
# one-time pad + HMAC hop by hop over the KMA links -> RelayAck -> keys to the SAE).
# Env:
#   KEYS=8             keys (256-bit) per request: enc_keys?number=KEYS&size=256
#   CONNECTIONS="1 32" wrk connections per run (1 = pure latency, one request at a time)
#   DURATION=10s  THREADS=2 (wrk threads, at most the connection count)
#   HOPS="1 3 6"
#   AGENTS=per-km      one qkdn-agent process per KM (each KM is its own node, as deployed);
#                      AGENTS=one: one agent process hosting all 7 KMs (--all)
#   AGENT_THREADS=     --threads of each agent (agent default when empty)
#   STORE=mem          STORE=pg: the controller writes its ledger to a private PostgreSQL 15
#                      (scripts/pg-private.sh, fsync on; PG_FAST=1 adds --fast)
#   KEEP=1             keep the temp dir (logs) at exit
#   RATE=20000000  POOL_BYTES=8388608  SAE_KEY_TTL=30 (s: keys the far SAE never fetches are
#                      wiped after this, so the far KM's store stays bounded)
# Goals: >= 2,000 relayed 256-bit keys/s end to end; p99 < 20 ms for a 3-hop relay.
# "keys/s" counts only 200 answers (wrk's "Non-2xx" and socket errors are subtracted and shown
# in the errors column; a row with errors is marked "ERRORS"). Latency percentiles are wrk's,
# over every answer. "us/req" columns are CPU time (user + system, /proc/PID/stat) per
# successful request of the controller, of all agents and (STORE=pg) of PostgreSQL: where the
# machine's time goes, and a figure that depends little on what else the machine runs.
# "grp/commit" (STORE=pg): write groups per database transaction during the run, from the
# controller's qkdn_store_write_groups_total / qkdn_store_commits_total (group commit).
# A "RESULT key=value ..." line per row at the end is for scripts (bench/run-all.sh).
# Before each hop count one key is fetched with curl and the far SAE's dec_keys must return
# the same bytes (the bench exits non-zero otherwise).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
controller=$build/controller/qkdn-controller
agent=$build/southbound/qkdn-agent
keys=${KEYS:-8}
connections=${CONNECTIONS:-1 32}
duration=${DURATION:-10s}
threads=${THREADS:-2}
hops_list=${HOPS:-1 3 6}
agents_mode=${AGENTS:-per-km}
agent_threads=${AGENT_THREADS:-}
store=${STORE:-mem}
rate=${RATE:-20000000}
pool_bytes=${POOL_BYTES:-8388608}
ttl=${SAE_KEY_TTL:-30}
nkm=7
for b in "$controller" "$agent"; do
  [ -x "$b" ] || { echo "$0: $b not built (cmake --build $build)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "$0: wrk not installed (apt-get install wrk)" >&2; exit 1; }
command -v curl >/dev/null || { echo "$0: curl not installed" >&2; exit 1; }
case $agents_mode in per-km | one) ;; *) echo "$0: AGENTS must be per-km or one" >&2; exit 2 ;; esac
case $store in mem | pg) ;; *) echo "$0: STORE must be mem or pg" >&2; exit 2 ;; esac

dir=$(mktemp -d)
chmod 755 "$dir" # pg-private.sh runs PostgreSQL as the postgres user when we are root
pids=""
cleanup() {
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  if [ "$store" = pg ]; then "$root/scripts/pg-private.sh" stop "$dir/pg" >/dev/null 2>&1 || true; fi
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT
trap 'echo signal >&2; exit 130' INT TERM

fail() {
  echo "$0: $*; logs:" >&2
  for f in "$dir"/*.log; do echo "== $f" >&2; tail -20 "$f" >&2; done
  exit 1
}

wait_file() { # FILE (sh has no locals: its own counter)
  wf=0
  while [ ! -s "$1" ]; do
    wf=$((wf + 1))
    [ $wf -lt 150 ] || fail "$1 not written"
    sleep 0.1
  done
}

# The line topology.
{
  echo '{"name": "relay-line", "kms": ['
  i=0
  while [ $i -lt $nkm ]; do
    [ $i -gt 0 ] && echo ','
    printf '{"km_id": "KM%d", "site": "Site %d"}' $i $i
    i=$((i + 1))
  done
  echo '], "links": ['
  i=1
  while [ $i -lt $nkm ]; do
    [ $i -gt 1 ] && echo ','
    printf '{"link_id": "KM%d-KM%d", "a": "KM%d", "b": "KM%d", "key_rate_bps": %s, "distance_km": 10.0, "qber": 0.02}' \
      $((i - 1)) $i $((i - 1)) $i "$rate"
    i=$((i + 1))
  done
  echo '], "applications": ['
  i=0
  while [ $i -lt $nkm ]; do
    [ $i -gt 0 ] && echo ','
    printf '{"sae_id": "SAE-KM%d", "km_id": "KM%d"}' $i $i
    i=$((i + 1))
  done
  echo ']}'
} >"$dir/topology.json"

line=$("$root/scripts/make-token.sh" bench viewer)
token=$(echo "$line" | sed -n 's/^token: //p')
echo "$line" | tail -1 >"$dir/tokens"

store_args=""
if [ "$store" = pg ]; then
  fast=""
  [ "${PG_FAST:-0}" = 1 ] && fast=--fast
  "$root/scripts/pg-private.sh" start "$dir/pg" $fast >"$dir/pg-start.log" 2>&1 || fail "PostgreSQL did not start"
  store_args="--store-dsn $(cat "$dir/pg/dsn")"
fi

# shellcheck disable=SC2086 # store_args is empty or two words
"$controller" --topology "$dir/topology.json" --ck-listen 127.0.0.1:0 --port-file "$dir/ck.port" \
  --insecure-ck --api-listen 127.0.0.1:0 --api-port-file "$dir/api.port" \
  --api-tokens "$dir/tokens" $store_args 2>"$dir/controller.log" &
controller_pid=$!
pids="$pids $controller_pid"
wait_file "$dir/ck.port"
wait_file "$dir/api.port"
ck_port=$(cat "$dir/ck.port")
api_port=$(cat "$dir/api.port")

agent_pids=""
start_agent() { # NAME ARGS...: writes $dir/NAME.etsi.port
  name=$1
  shift
  set -- "$@" --controller "127.0.0.1:$ck_port" --insecure-ck --insecure-kma \
    --pool-capacity-bytes "$pool_bytes" --sae-key-ttl-s "$ttl" \
    --etsi-listen 127.0.0.1:0 --etsi-insecure --etsi-port-file "$dir/$name.etsi.port"
  [ -n "$agent_threads" ] && set -- "$@" --threads "$agent_threads"
  "$agent" --topology "$dir/topology.json" "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
  agent_pids="$agent_pids $!"
  pids="$pids $!"
}
if [ "$agents_mode" = one ]; then
  start_agent agent --all
  wait_file "$dir/agent.etsi.port"
  i=0
  while [ $i -lt $nkm ]; do
    cp "$dir/agent.etsi.port" "$dir/km$i.etsi.port"
    i=$((i + 1))
  done
else
  i=0
  while [ $i -lt $nkm ]; do
    start_agent "km$i" --km "KM$i"
    i=$((i + 1))
  done
  i=0
  while [ $i -lt $nkm ]; do
    wait_file "$dir/km$i.etsi.port"
    i=$((i + 1))
  done
fi

# Every link up, every pool at least 90 % full (as last reported to the controller).
url="http://127.0.0.1:$api_port/api/v1/links"
links=$((nkm - 1))
want=$((pool_bytes * 8 * 9 / 10))
i=0
while :; do
  page=$(curl -s -H "Authorization: Bearer $token" "$url" || true)
  up=$(echo "$page" | grep -o '"oper_state":"up"' | wc -l)
  low=$(echo "$page" | grep -o '"stored_key_bits":[0-9]*' | cut -d: -f2 |
    awk -v w="$want" 'BEGIN { m = -1 } { if (m < 0 || $1 < m) m = $1 } END { print m }')
  [ "$up" -ge "$links" ] && [ "$low" -ge "$want" ] && break
  i=$((i + 1))
  [ $((i % 10)) -eq 0 ] && echo "waiting $((i / 2)) s: $up of $links links up, smallest pool $low of $want bits" >&2
  [ $i -lt 240 ] || fail "after 120 s: $up of $links links up, smallest pool $low of $want bits"
  sleep 0.5
done
fill_s=$(awk -v i=$i 'BEGIN { printf "%.1f", i / 2 }')

etsi() { echo "http://127.0.0.1:$(cat "$dir/km$1.etsi.port")/api/v1/keys"; }

# One key from SAE-KM0 to SAE-KM$1; SAE-KM$1 must get the same bytes from dec_keys.
check() {
  h=$1
  n=0
  while :; do
    body=$(curl -s -w '\n%{http_code}' -H "X-SAE-ID: SAE-KM0" \
      "$(etsi 0)/SAE-KM$h/enc_keys?number=1&size=256")
    [ "$(echo "$body" | tail -1)" = 200 ] && break
    n=$((n + 1))
    [ $n -lt 50 ] || fail "enc_keys SAE-KM0 -> SAE-KM$h: $body"
    sleep 0.2
  done
  id=$(echo "$body" | sed -n 's/.*"key_ID":"\([^"]*\)".*/\1/p')
  key=$(echo "$body" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
  back=$(curl -s -H "X-SAE-ID: SAE-KM$h" "$(etsi "$h")/SAE-KM0/dec_keys?key_ID=$id")
  got=$(echo "$back" | sed -n 's/.*"key":"\([^"]*\)".*/\1/p')
  if [ -z "$key" ] || [ "$got" != "$key" ]; then fail "dec_keys at SAE-KM$h for $id: '$back' (enc_keys gave '$body')"; fi
}

ticks=$(getconf CLK_TCK)
pg_pids() {
  [ "$store" = pg ] || return 0
  pm=$(head -1 "$dir/pg/data/postmaster.pid" 2>/dev/null) || return 0
  echo "$pm"
  ps -o pid= --ppid "$pm" 2>/dev/null || true
}
cpu_ticks() { # PIDS...: summed user + system ticks
  for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null || true; done |
    awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }'
}
store_counts() { # "write-groups commits" from the controller's /metrics (open: no token needed)
  curl -s "http://127.0.0.1:$api_port/metrics" |
    awk '$1 == "qkdn_store_write_groups_total" { g = $2 } $1 == "qkdn_store_commits_total" { c = $2 }
         END { printf "%d %d\n", g, c }'
}
per_req() { # TICKS REQUESTS
  awk -v t="$1" -v hz="$ticks" -v n="$2" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "-" }'
}

echo "line of $nkm KMs, $links links at $rate b/s, pools $pool_bytes B/link end (filled in $fill_s s);" \
  "agents: $agents_mode; store: $store; $keys x 256-bit keys/request; wrk $duration"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
row() { printf '%-5s %-6s %10s %10s %9s %9s %9s %8s %8s %8s %10s %s\n' "$@"; }
row hops conns "requests/s" "keys/s" p50 p90 p99 "ctl us" "agt us" "pg us" "grp/commit" errors
status=0
results=""
for h in $hops_list; do
  check "$h"
  for c in $connections; do
    t=$threads
    [ "$t" -gt "$c" ] && t=$c
    pgp=$(pg_pids)
    c0=$(cpu_ticks $controller_pid)
    # shellcheck disable=SC2086 # a PID list
    a0=$(cpu_ticks $agent_pids)
    # shellcheck disable=SC2086 # a PID list
    p0=$(cpu_ticks $pgp)
    s0=$(store_counts)
    out=$(wrk -t"$t" -c"$c" -d"$duration" --latency -H "X-SAE-ID: SAE-KM0" \
      "$(etsi 0)/SAE-KM$h/enc_keys?number=$keys&size=256")
    c1=$(cpu_ticks $controller_pid)
    # shellcheck disable=SC2086 # a PID list
    a1=$(cpu_ticks $agent_pids)
    # shellcheck disable=SC2086 # a PID list
    p1=$(cpu_ticks $pgp)
    s1=$(store_counts)
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    secs=$(echo "$out" | awk '/requests in/ {s = $4; sub(/,$/, "", s); if (s ~ /ms$/) { sub(/ms$/, "", s); s /= 1000 } else if (s ~ /m$/) { sub(/m$/, "", s); s *= 60 } else sub(/s$/, "", s); print s}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    sock=$(echo "$out" | awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}')
    ok=$((total - ${non2xx:-0}))
    rps=$(awk -v n="$ok" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
    kps=$(awk -v n="$ok" -v s="$secs" -v k="$keys" 'BEGIN { printf "%.0f", n * k / s }')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p90=$(echo "$out" | awk '$1 == "90%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    errs=0
    if [ "${non2xx:-0}" -gt 0 ] || [ "${sock:-0}" -gt 0 ]; then
      errs="ERRORS: ${non2xx:-0} non-2xx, ${sock:-0} socket errors of $total"
      status=1
      sample=$(curl -s -w ' (HTTP %{http_code})' -H "X-SAE-ID: SAE-KM0" \
        "$(etsi 0)/SAE-KM$h/enc_keys?number=$keys&size=256" | cut -c1-200)
      echo "  answer now: $sample" >&2
    fi
    pgc="-"
    [ "$store" = pg ] && pgc=$(per_req $((p1 - p0)) "$ok")
    # Write groups per transaction (group commit); "-" without a store.
    gpc=$(echo "$s0 $s1" | awk '{ c = $4 - $2; if (c > 0) printf "%.1f", ($3 - $1) / c; else print "-" }')
    ctl=$(per_req $((c1 - c0)) "$ok")
    agt=$(per_req $((a1 - a0)) "$ok")
    row "$h" "$c" "$rps" "$kps" "$p50" "$p90" "$p99" "$ctl" "$agt" "$pgc" "$gpc" "$errs"
    results="$results
RESULT store=$store hops=$h connections=$c requests_per_s=$rps keys_per_s=$kps p50=$p50 p90=$p90 p99=$p99 ctl_us=$ctl agt_us=$agt pg_us=$pgc groups_per_commit=$gpc errors=$((${non2xx:-0} + ${sock:-0}))"
  done
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
# One line per row for scripts (bench/run-all.sh); latencies as wrk prints them.
echo "$results" | sed '/^$/d'
for p in $pids; do
  kill -0 "$p" 2>/dev/null || fail "process $p exited during the bench"
done
exit $status
