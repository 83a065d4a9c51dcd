#!/usr/bin/env bash
# The demo network: installs what is missing, builds, then runs a private PostgreSQL, the
# controller, one agent hosting every KM of a sample network and Debian's Prometheus (loopback,
# scraping the controller, with dashboards/prometheus/qkdn.rules.yml); shows live key pools,
# drives key traffic, injects a QBER fault that triggers a reroute, and prints the URLs to look
# at: the network view, Prometheus and its alerts.
#
# Usage: scripts/demo.sh [--topology FILE] [--duration SECONDS] [--no-build] [--ha]
#   --topology FILE     network to run (default tests/data/topologies/germany50.json)
#   --duration SECONDS  stop after this long (default: run until Ctrl-C; 0 = stop after the tour)
#   --ha                two controllers (--ha, docs/high-availability.md); after the tour the
#                       leader is killed (kill -9) and the standby takes over
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
topology="$root/tests/data/topologies/germany50.json"
duration=""
build=1
ha=0
while [ $# -gt 0 ]; do
  case "$1" in
    --topology) topology=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --ha) ha=1; shift ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -f "$topology" ] || { echo "demo.sh: no topology file '$topology'" >&2; exit 2; }

if [ "$build" = 1 ]; then
  "$root/scripts/install-deps.sh"
  "$root/scripts/build.sh" "$root/build"
fi
bin="$root/build"
work="$root/build/demo"
mkdir -p "$work"
chmod 0711 "$root/build" "$work" 2>/dev/null || true
pids=()
cleanup() {
  echo "demo: stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$root/scripts/pg-private.sh" stop "$work/pg" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "demo: certificates"
"$root/scripts/dev-ca.sh" --topology "$topology" "$work/pki" >/dev/null
echo "demo: private PostgreSQL"
dsn=$("$root/scripts/pg-private.sh" start "$work/pg" | tail -1)
if [ ! -s "$work/admin.token" ]; then
  out=$("$root/scripts/make-token.sh" demo-admin admin)
  echo "$out" | sed -n 's/^token: //p' > "$work/admin.token"
  echo "$out" | tail -1 > "$work/tokens"
  chmod 600 "$work/admin.token"
fi
if [ ! -s "$work/viewer.token" ]; then
  out=$("$root/scripts/make-token.sh" demo-viewer viewer)
  echo "$out" | sed -n 's/^token: //p' > "$work/viewer.token"
  echo "$out" | tail -1 >> "$work/tokens"
  chmod 600 "$work/viewer.token"
fi

rm -f "$work/ck.port" "$work/api.port" "$work/ck-b.port" "$work/api-b.port"
ha_flags=()
[ "$ha" = 1 ] && ha_flags=(--ha --ha-lease-ms 3000 --ha-holder controller-a)
"$bin/controller/qkdn-controller" --topology "$topology" --topology-override \
  --ck-listen 127.0.0.1:0 --port-file "$work/ck.port" \
  --api-listen 127.0.0.1:0 --api-port-file "$work/api.port" --api-tokens "$work/tokens" \
  --tls-ca "$work/pki/ca.pem" --tls-cert "$work/pki/controller.pem" \
  --tls-key "$work/pki/controller.key" --store-dsn "$dsn" "${ha_flags[@]}" \
  --heartbeat-interval-ms 1000 --status-interval-ms 1000 2> "$work/controller.log" &
pids+=($!)
leader_pid=$!
main_pid=$!
for _ in $(seq 100); do [ -s "$work/ck.port" ] && [ -s "$work/api.port" ] && break; sleep 0.1; done
[ -s "$work/api.port" ] || { echo "demo: controller did not start; see $work/controller.log" >&2; tail -5 "$work/controller.log" >&2; exit 1; }
ck=$(cat "$work/ck.port"); api=$(cat "$work/api.port")
controllers="127.0.0.1:$ck"
if [ "$ha" = 1 ]; then
  # A second controller on the same database: standby while controller-a leads.
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api/api/v1/health" | grep -q '"role":"leader"' && break; sleep 0.1; done
  "$bin/controller/qkdn-controller" --topology "$topology" \
    --ck-listen 127.0.0.1:0 --port-file "$work/ck-b.port" \
    --api-listen 127.0.0.1:0 --api-port-file "$work/api-b.port" --api-tokens "$work/tokens" \
    --tls-ca "$work/pki/ca.pem" --tls-cert "$work/pki/controller.pem" \
    --tls-key "$work/pki/controller.key" --store-dsn "$dsn" --ha --ha-lease-ms 3000 \
    --ha-holder controller-b --heartbeat-interval-ms 1000 --status-interval-ms 1000 \
    2> "$work/controller-b.log" &
  pids+=($!)
  main_pid=$!
  for _ in $(seq 100); do [ -s "$work/ck-b.port" ] && [ -s "$work/api-b.port" ] && break; sleep 0.1; done
  [ -s "$work/api-b.port" ] || { echo "demo: controller-b did not start; see $work/controller-b.log" >&2; exit 1; }
  ck_b=$(cat "$work/ck-b.port"); api_b=$(cat "$work/api-b.port")
  controllers="127.0.0.1:$ck,127.0.0.1:$ck_b"
  echo "demo: controller-a leads (API 127.0.0.1:$api), controller-b stands by (API 127.0.0.1:$api_b)"
fi

# Prometheus on loopback (9090, or a free port when 9090 is taken), scraping the controller.
prom_port=9090
if ! python3 -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1", 9090))' 2>/dev/null; then
  prom_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
mkdir -p "$work/prometheus/data"
prom_targets="\"127.0.0.1:$api\""
[ "$ha" = 1 ] && prom_targets+=", \"127.0.0.1:$api_b\""  # both: whichever leads
cat > "$work/prometheus/prometheus.yml" <<YML
# Written by scripts/demo.sh (dashboards/prometheus/prometheus.yml with the demo's port).
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files: ["$root/dashboards/prometheus/qkdn.rules.yml"]
scrape_configs:
  - job_name: qkdn-controller
    static_configs:
      - targets: [$prom_targets]
YML
prometheus --config.file="$work/prometheus/prometheus.yml" \
  --storage.tsdb.path="$work/prometheus/data" --storage.tsdb.retention.time=1d \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn 2> "$work/prometheus.log" &
pids+=($!)

etsi_flags=""
# The help is read whole first: `--help | grep -q` under pipefail fails when grep stops reading
# early and the agent's later writes get SIGPIPE (the demo then ran without key traffic).
agent_help=$("$bin/southbound/qkdn-agent" --help 2>&1 || true)
case "$agent_help" in *--etsi-insecure*) etsi_flags="--etsi-insecure" ;; esac
"$bin/southbound/qkdn-agent" --topology "$topology" --all --controller "$controllers" \
  --tls-ca "$work/pki/ca.pem" --tls-cert-dir "$work/pki/km" --admin-listen 127.0.0.1:0 $etsi_flags \
  > "$work/agent.out" 2> "$work/agent.log" &
pids+=($!)

export QKDN_API="http://127.0.0.1:$api"
export QKDN_TOKEN_FILE="$work/admin.token"
python3 "$root/scripts/demo_tour.py" --api "$QKDN_API" --token-file "$work/admin.token" \
  --agent-out "$work/agent.out" --topology "$topology"

if [ "$ha" = 1 ]; then
  echo "demo: failover: kill -9 of controller-a (the leader)"
  t0=$(date +%s.%N)
  kill -9 "$leader_pid"
  wait "$leader_pid" 2>/dev/null || true  # (bash would report "Killed")
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$api_b/api/v1/health" | grep -q '"role":"leader"' && break
    sleep 0.05
  done
  t1=$(date +%s.%N)
  echo "demo: takeover: controller-b leads $(python3 -c "print(f'{$t1 - $t0:.2f}')") s after the kill"
  python3 "$root/scripts/demo_tour.py" --api "http://127.0.0.1:$api_b" \
    --token-file "$work/admin.token" --agent-out "$work/agent.out" --topology "$topology" \
    --after-failover "$t0" || true
  QKDN_API="http://127.0.0.1:$api_b" QKDN_TOKEN_FILE="$work/admin.token" \
    "$bin/northbound/qkdnctl" health || true
  export QKDN_API="http://127.0.0.1:$api_b"
fi

for _ in $(seq 100); do curl -sf "http://127.0.0.1:$prom_port/-/ready" >/dev/null && break; sleep 0.1; done
cat <<TXT

demo: running.
  network view     $QKDN_API/ui/   (sign in with the viewer token in $work/viewer.token)
  Prometheus       http://127.0.0.1:$prom_port/graph?g0.expr=qkdn_link_key_pool_bytes
  alerts           http://127.0.0.1:$prom_port/alerts   (QkdnLinkQberHigh fires for the faulted link)
  northbound API   $QKDN_API/api/v1/health   (token: $work/admin.token)
  OpenAPI          $QKDN_API/api/v1/openapi.json
  metrics          $QKDN_API/metrics
  CLI              QKDN_API=$QKDN_API QKDN_TOKEN_FILE=$work/admin.token $bin/northbound/qkdnctl link list
  logs             $work/controller.log  $work/agent.log  $work/prometheus.log
TXT
if [ -z "$duration" ]; then
  echo "Press Ctrl-C to stop."
  wait "$main_pid"
elif [ "$duration" != 0 ]; then
  sleep "$duration"
fi
