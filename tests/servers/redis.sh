#!/usr/bin/env bash
# Starts (or stops) the Redis servers the integration tests talk to:
#   a standalone server on $REDIS_PORT (default 26379), and
#   a 6-node Redis Cluster (3 primaries, 3 replicas) on $CLUSTER_BASE..+5 (default 27000).
# All on 127.0.0.1, no persistence, state under DIR.
#   bash tests/servers/redis.sh start DIR
#   bash tests/servers/redis.sh stop DIR
#   bash tests/servers/redis.sh restart-node DIR PORT   (a cluster node, with its nodes.conf)
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?directory}
port=${REDIS_PORT:-26379}
base=${CLUSTER_BASE:-27000}
ports=("$port")
for i in 0 1 2 3 4 5; do ports+=($((base + i))); done

stop_all() {
  for p in "${ports[@]}"; do
    redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
  done
}

wait_ping() {
  for _ in $(seq 200); do
    redis-cli -p "$1" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  echo "redis on port $1 did not start" >&2
  return 1
}

common=(--bind 127.0.0.1 --save '' --appendonly no --daemonize yes --protected-mode no)

start_cluster_node() {
  local p=$1
  mkdir -p "$dir/$p"
  redis-server --port "$p" "${common[@]}" --dir "$dir/$p" --logfile "$dir/$p.log" \
    --pidfile "$dir/$p.pid" --cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" \
    --cluster-node-timeout 2000
}

cluster_ok() {
  for i in 0 1 2 3 4 5; do
    redis-cli -p $((base + i)) cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
}

case "$cmd" in
  restart-node)
    p=${3:?port}
    start_cluster_node "$p"
    wait_ping "$p"
    for _ in $(seq 200); do cluster_ok && break; sleep 0.05; done
    # Back as a replica: ready only once its copy of the primary is in sync, so that the
    # next failover finds an eligible replica.
    for _ in $(seq 600); do
      redis-cli -p "$p" info replication 2>/dev/null | grep -q 'master_link_status:up' && break
      sleep 0.05
    done
    redis-cli -p "$p" info replication | grep -q 'master_link_status:up' ||
      { echo "node $p did not sync with its primary" >&2; exit 1; }
    ;;
  start)
    stop_all  # leftovers of an interrupted run
    rm -rf "$dir"
    mkdir -p "$dir"
    redis-server --port "$port" "${common[@]}" --dir "$dir" --logfile "$dir/standalone.log" \
      --pidfile "$dir/standalone.pid"
    for i in 0 1 2 3 4 5; do start_cluster_node $((base + i)); done
    for p in "${ports[@]}"; do wait_ping "$p"; done
    nodes=()
    for i in 0 1 2 3 4 5; do nodes+=("127.0.0.1:$((base + i))"); done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1
    ok=0
    for _ in $(seq 200); do cluster_ok && { ok=1; break; }; sleep 0.05; done
    [[ $ok == 1 ]] || { echo "cluster did not reach cluster_state:ok" >&2; cat "$dir/create.log" >&2; exit 1; }
    # Ready means every replica is in sync with its primary: tests of WAIT and failover
    # need the replicas, not only the slots.
    for p in "${ports[@]}"; do
      redis-cli -p "$p" info replication | grep -q '^role:slave' || continue
      for _ in $(seq 200); do
        redis-cli -p "$p" info replication | grep -q 'master_link_status:up' && break
        sleep 0.05
      done
      redis-cli -p "$p" info replication | grep -q 'master_link_status:up' ||
        { echo "replica $p did not sync with its primary" >&2; exit 1; }
    done
    echo "redis: standalone 127.0.0.1:$port, cluster 127.0.0.1:$base-$((base + 5))"
    ;;
  stop)
    stop_all
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
