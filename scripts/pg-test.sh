#!/usr/bin/env bash
# Throwaway PostgreSQL server for the store contract tests (Debian 12 packages, run as root).
#
# Usage:  scripts/pg-test.sh start|stop|status|env
#
#   start   apt-get postgresql when missing, initdb on first use, start the server on
#           127.0.0.1 and a free port; idempotent (a running server is left alone)
#   stop    stop the server this script started (the data folder stays; delete it to wipe)
#   status  exit 0 only when the server answers
#   env     print `export SZB_PG_DSN=...` for clients: eval "$(scripts/pg-test.sh env)"
#
# Everything (cluster, socket, log, port file) lives under ${SZB_PG_DIR:-/tmp/szb-pg}.
# PostgreSQL refuses to run as root and has no switch to allow it, so initdb and pg_ctl run
# in a new user namespace (`unshare --user`, no uid map): inside they are `nobody`, outside
# file access is still root's. The server trusts local connections as user `postgres`.
set -euo pipefail

D=${SZB_PG_DIR:-/tmp/szb-pg}
DATA=$D/data
PORT_FILE=$D/port
LOG=$D/server.log

log() { echo "pg-test: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
}

install() {
  bindir >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "postgresql is not installed and installing it needs root"
  log "installing postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq </dev/null >&2
  apt-get install -y -qq --no-install-recommends postgresql </dev/null >&2
  bindir >/dev/null || die "postgresql installed but no pg_ctl under /usr/lib/postgresql/*/bin"
}

# Run a PostgreSQL program; as root, inside a user namespace where we are `nobody`.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    unshare --user "$@"
  else
    "$@"
  fi
}

check_unshare() {
  [ "$(id -u)" != 0 ] && return 0
  command -v unshare >/dev/null || die "unshare (util-linux) is missing; PostgreSQL cannot run as root"
  unshare --user true 2>/dev/null || die "user namespaces are not allowed (unshare --user failed)"
}

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    return
  fi
  local p
  for p in $(shuf -i 20000-60999 -n 50); do   # nothing answers there: free enough for a test server
    (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
  die "no free port found"
}

port() { [ -s "$PORT_FILE" ] && cat "$PORT_FILE"; }

# A pid is alive when it exists and is not a zombie (kill -0 and PostgreSQL's own check both
# succeed on zombies, and PID 1 here may never reap a killed postmaster).
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
postmaster_pid() { [ -s "$DATA/postmaster.pid" ] && head -n 1 "$DATA/postmaster.pid"; }
postmaster_alive() { alive "$(postmaster_pid || true)"; }

status() {
  local bin p
  bin=$(bindir) || return 1
  p=$(port) || return 1
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$p" -U postgres -t 2
}

start() {
  install
  check_unshare
  local bin p
  bin=$(bindir)
  mkdir -p "$D"
  if status; then
    log "already running on port $(port)"
    return 0
  fi
  if [ ! -s "$DATA/PG_VERSION" ]; then
    rm -rf "$DATA"
    as_pg "$bin/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$D/initdb.log" 2>&1 \
      || { cat "$D/initdb.log" >&2; die "initdb failed"; }
  fi
  if postmaster_alive; then
    die "a postmaster (pid $(postmaster_pid)) runs on $DATA but does not answer on port $(port || echo '?')"
  fi
  # A server killed without `stop` leaves its pid file behind; postgres refuses to start then.
  rm -f "$DATA/postmaster.pid"
  p=$(free_port)
  echo "$p" >"$PORT_FILE"
  as_pg "$bin/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-p $p -k $D -h 127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    >/dev/null </dev/null || { tail -n 20 "$LOG" >&2; die "server did not start (log: $LOG)"; }
  status || die "server started but does not answer on port $p"
  log "running on 127.0.0.1:$p (data $DATA)"
}

stop() {
  local bin
  bin=$(bindir) || return 0
  if ! postmaster_alive; then
    rm -f "$DATA/postmaster.pid"
    log "not running"
    return 0
  fi
  as_pg "$bin/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null || die "pg_ctl stop failed"
  log "stopped"
}

env_lines() {
  local p
  p=$(port) || die "no server under $D; run: $0 start"
  echo "export SZB_PG_DSN=postgresql://postgres@127.0.0.1:$p/postgres"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
