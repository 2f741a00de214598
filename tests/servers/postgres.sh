#!/usr/bin/env bash
# Starts (or stops) the PostgreSQL servers the integration tests talk to, all on 127.0.0.1:
#   a PostgreSQL 15 primary on $PG_PORT (default 25432),
#   a streaming replica made with pg_basebackup -R (with a replication slot) on $PG_PORT+1
#   (default 25433),
#   PgBouncer 1.18 in transaction pooling mode on $PGB_PORT (default 26432) with two
#   databases: `kiln` (the primary) and `kiln_ro` (the replica).
# PostgreSQL refuses to run as root, so the servers run as the `postgres` user that the
# Debian package creates; their state lives under DIR (owned by that user).
#   bash tests/servers/postgres.sh start DIR
#   bash tests/servers/postgres.sh stop DIR
#   bash tests/servers/postgres.sh stop-primary|start-primary DIR   (failure tests)
#   bash tests/servers/postgres.sh kill-primary DIR   (SIGKILL of every primary process: a crash)
# The servers keep PostgreSQL's durability defaults (fsync, full_page_writes and
# synchronous_commit on): the tests and benchmarks that speak of durability measure what
# they claim.
set -euo pipefail
cmd=${1:?start|stop|stop-primary|start-primary|kill-primary}
dir=$(realpath -m "${2:?directory}")  # absolute: the walk up to / below needs it
port=${PG_PORT:-25432}
rport=$((port + 1))
bport=${PGB_PORT:-26432}
bin=/usr/lib/postgresql/15/bin
user=postgres

as_pg() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

pg_up() { as_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$1"; }

wait_up() {
  for _ in $(seq 300); do
    pg_up "$1" && return 0
    sleep 0.05
  done
  echo "postgres on port $1 did not start (log: $2)" >&2
  tail -20 "$2" >&2 || true
  return 1
}

# A server left on our ports by an earlier run in another directory (an aborted run, a
# different build tree): ask it where its data is and stop it there.
stop_strays() {
  local p d
  for p in "$port" "$rport"; do
    d=$(as_pg "$bin/psql" -h 127.0.0.1 -p "$p" -U postgres -d postgres -Atc "SHOW data_directory" 2>/dev/null) || continue
    echo "postgres: stopping a server left on port $p ($d)" >&2
    as_pg "$bin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  as_pg "$bin/psql" -h 127.0.0.1 -p "$bport" -U postgres -d pgbouncer -c SHUTDOWN >/dev/null 2>&1 || true
}

stop_all() {
  if [[ -f "$dir/pgbouncer.pid" ]]; then
    kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    rm -f "$dir/pgbouncer.pid"
  fi
  for d in replica primary; do
    [[ -d "$dir/$d" ]] && as_pg "$bin/pg_ctl" -D "$dir/$d" -m immediate stop >/dev/null 2>&1 || true
  done
  return 0
}

start_server() {  # name port
  as_pg "$bin/pg_ctl" -D "$dir/$1" -l "$dir/$1.log" -w -t 30 \
    -o "-p $2 -k $dir -c listen_addresses=127.0.0.1" start >/dev/null || {
    tail -20 "$dir/$1.log" >&2
    return 1
  }
}

case "$cmd" in
  stop)
    stop_all
    exit 0
    ;;
  stop-primary)
    as_pg "$bin/pg_ctl" -D "$dir/primary" -m fast stop >/dev/null
    exit 0
    ;;
  kill-primary)
    # The postmaster and every backend at once, as a crash would; the next start-primary
    # recovers from the WAL.
    pids="$(head -1 "$dir/primary/postmaster.pid") $(pgrep -P "$(head -1 "$dir/primary/postmaster.pid")" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 200); do
      alive=0
      for p in $pids; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
      ((alive)) || break
      sleep 0.05
    done
    ! pg_up "$port" || { echo "the primary still answers after SIGKILL" >&2; exit 1; }
    exit 0
    ;;
  start-primary)
    start_server primary "$port"
    wait_up "$port" "$dir/primary.log"
    # Back means back for the nodes too, which reach it through PgBouncer: wait (bounded)
    # until PgBouncer has logged in to it again (it retries every server_login_retry).
    for _ in $(seq 200); do
      as_pg "$bin/psql" -h 127.0.0.1 -p "$bport" -U postgres -d kiln -Atc "SELECT 1" >/dev/null 2>&1 && exit 0
      sleep 0.05
    done
    echo "PgBouncer did not reach the restarted primary within 10 s" >&2
    exit 1
    ;;
  start) ;;
  *)
    echo "unknown command $cmd" >&2
    exit 2
    ;;
esac

stop_all
stop_strays
rm -rf "$dir"
mkdir -p "$dir"
# The servers' user must reach DIR through its parents.
p=$dir
while [[ "$p" != / ]]; do
  p=$(dirname "$p")
  chmod o+x "$p" 2>/dev/null || true
done
[[ $(id -u) -eq 0 ]] && chown "$user:" "$dir"

as_pg "$bin/initdb" -D "$dir/primary" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat >>"$dir/primary/postgresql.conf" <<EOF
wal_level = replica
max_wal_senders = 4
hot_standby = on
max_connections = 200
EOF
echo "host replication postgres 127.0.0.1/32 trust" >>"$dir/primary/pg_hba.conf"
start_server primary "$port"
wait_up "$port" "$dir/primary.log"
as_pg "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE kiln" >/dev/null

# A physical replication slot: the primary keeps the WAL the replica has not received. Without
# it a replica cut off while tests stop the primary (and write a lot after) could find the
# segments it needs recycled ("requested WAL segment ... has already been removed") and
# stay behind for the rest of the run.
as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres -D "$dir/replica" -R -X stream -c fast \
  -C -S kiln_replica
start_server replica "$rport"
wait_up "$rport" "$dir/replica.log"

cat >"$dir/pgbouncer.ini" <<EOF
[databases]
kiln = host=127.0.0.1 port=$port dbname=kiln
kiln_ro = host=127.0.0.1 port=$rport dbname=kiln
; any other name: that database on the primary (the tests make one per test)
* = host=127.0.0.1 port=$port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
; After the primary was down, try it again every second (default 15 s): the failure tests
; restart it and go on at once.
server_login_retry = 1
max_client_conn = 1000
default_pool_size = 20
admin_users = postgres
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
echo '"postgres" ""' >"$dir/userlist.txt"
[[ $(id -u) -eq 0 ]] && chown "$user:" "$dir/pgbouncer.ini" "$dir/userlist.txt"
as_pg pgbouncer -d "$dir/pgbouncer.ini"
for _ in $(seq 200); do
  as_pg "$bin/psql" -h 127.0.0.1 -p "$bport" -U postgres -d kiln -Atc "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.05
done
as_pg "$bin/psql" -h 127.0.0.1 -p "$bport" -U postgres -d kiln_ro -Atc "SELECT pg_is_in_recovery()" |
  grep -q t || {
  echo "pgbouncer did not reach the replica" >&2
  exit 1
}
echo "postgres: primary :$port, replica :$rport, pgbouncer (transaction mode) :$bport"
