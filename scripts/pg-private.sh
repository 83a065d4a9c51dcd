#!/usr/bin/env bash
# Starts and stops a private PostgreSQL 15 for tests, benchmarks and the demo (DESIGN.md 9, 10).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: pg-private.sh start DIR [PORT] [--fast]
       pg-private.sh stop DIR
       pg-private.sh status DIR
       pg-private.sh --help

start   Creates a cluster in DIR/data (initdb, trust authentication, user postgres) unless one is
        there, and starts it listening on 127.0.0.1:PORT and on a Unix socket in DIR. Without
        PORT, reuses the port of an earlier start in DIR, else picks a free one. Prints the DSN
        postgresql://postgres@127.0.0.1:PORT/postgres and writes it to DIR/dsn. Starting a running
        instance only prints its DSN.
        --fast turns fsync, synchronous_commit and full_page_writes off for this run: for tests
        only, a crash can lose or corrupt data.
stop    Stops the instance in DIR (fast shutdown); does nothing if it is not running.
status  Exits 0 and prints the DSN if the instance in DIR is running, 1 otherwise.

When run as root, initdb and pg_ctl run as the postgres user (initdb refuses root), and DIR is
given to that user; every parent of DIR must be searchable by it.
EOF
}

die() {
  echo "pg-private.sh: $*" >&2
  exit 1
}

find_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d=$(pg_config --bindir 2>/dev/null || true)
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return
    fi
  fi
  for d in /usr/lib/postgresql/15/bin /usr/lib/postgresql/*/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"
      return
    fi
  done
  die "initdb/pg_ctl not found (install postgresql-15)"
}

# Runs a command as the owner of the cluster: postgres when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

is_running() {
  [ -f "$1/data/PG_VERSION" ] && as_owner "$BINDIR/pg_ctl" status -D "$1/data" >/dev/null 2>&1
}

dsn_for() {
  echo "postgresql://postgres@127.0.0.1:$1/postgres"
}

cmd_start() {
  local dir=$1 port=$2 fast=$3
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    chmod 700 "$dir"
    runuser -u postgres -- test -x "$dir" || die "user postgres cannot reach $dir (check the \
permissions of its parent folders)"
  fi
  if is_running "$dir"; then
    [ -f "$dir/port" ] || die "$dir/data is running but $dir/port is missing"
    local running_port
    running_port=$(cat "$dir/port")
    if [ -n "$port" ] && [ "$port" != "$running_port" ]; then
      die "already running in $dir on port $running_port, not $port"
    fi
    dsn_for "$running_port"
    return
  fi
  if [ -z "$port" ] && [ -f "$dir/port" ]; then
    port=$(cat "$dir/port")
  fi
  if [ -z "$port" ]; then
    port=$(free_port)
  fi
  case "$port" in
    '' | *[!0-9]*) die "bad port '$port'" ;;
  esac
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$BINDIR/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      --no-sync >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      die "initdb failed in $dir/data"
    }
  fi
  local opts="-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir"
  opts+=" -c max_connections=200"
  if [ "$fast" = 1 ]; then
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  # Written as the owner so that a later non-root stop can read it too.
  as_owner sh -c "echo $port >'$dir/port'"
  if ! as_owner "$BINDIR/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/postgres.log" \
    -o "$opts" >/dev/null; then
    tail -n 20 "$dir/postgres.log" >&2 || true
    die "PostgreSQL did not start in $dir (port $port)"
  fi
  local dsn
  dsn=$(dsn_for "$port")
  as_owner sh -c "echo '$dsn' >'$dir/dsn'"
  echo "$dsn"
}

cmd_stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  if is_running "$dir"; then
    as_owner "$BINDIR/pg_ctl" stop -w -t 60 -m fast -D "$dir/data" >/dev/null
  fi
}

cmd_status() {
  local dir=$1
  if is_running "$dir"; then
    dsn_for "$(cat "$dir/port")"
    return 0
  fi
  return 1
}

main() {
  local cmd="" dir="" port="" fast=0 arg
  local -a pos=()
  for arg in "$@"; do
    case "$arg" in
      -h | --help)
        usage
        exit 0
        ;;
      --fast) fast=1 ;;
      -*) die "unknown option $arg (see --help)" ;;
      *) pos+=("$arg") ;;
    esac
  done
  [ ${#pos[@]} -ge 2 ] || {
    usage >&2
    exit 2
  }
  cmd=${pos[0]}
  dir=${pos[1]}
  port=${pos[2]:-}
  BINDIR=$(find_bindir)
  case "$cmd" in
    start) cmd_start "$dir" "$port" "$fast" ;;
    stop) cmd_stop "$dir" ;;
    status) cmd_status "$dir" ;;
    *) die "unknown command $cmd (see --help)" ;;
  esac
}

main "$@"
