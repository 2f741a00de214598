#!/usr/bin/env bash
# One room, the unit that cannot be sharded: `kiln-bench collab` with every client in one
# room, each sending a batch every INTERVAL seconds and a cursor at 10 Hz.
#
#   bash bench/run_room.sh redis [NODES...]      (default: 1 2 3)
#     kiln gateway x NODES on one Redis (started here on port 26500). For each node count:
#     60 editors at 10 batches/s (the issue's scenario: zero refusals, ack p99 < 50 ms),
#     then rising offered rates until the room stops keeping up; prints one JSON line per
#     run and, per node count, the highest acknowledged batches/s with no refusal and ack
#     p99 under 50 ms.
#   bash bench/run_room.sh journal
#     kiln serve with the journal on (fsync per group), on with fsync per interval, and
#     off, at the same offered rates: acknowledged batches/s and ack p99 side by side.
#
# Environment: DURATION (s, default 10), RATES (offered batches/s, default
# "600 1500 3000 6000 10000"). Everything shares this machine, generator included.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?redis|journal}
shift
duration=${DURATION:-10}
read -r -a rates <<<"${RATES:-600 1500 3000 6000 10000}"
secret=bench-secret-0123456789abcdef0123456789
rport=26500
clients=60

bash scripts/setup.sh --test >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln kiln-bench >/dev/null
source bench/lib.sh
bench_scratch room
trap 'stop_nodes; redis-cli -p $rport shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# start_node NAME ROLE ARGS...: starts kiln, waits for its URL line, prints its port.
start_node() {
  local name=$1 role=$2
  shift 2
  build/release/src/app/kiln "$role" --http-listen 127.0.0.1:0 --objects-listen 127.0.0.1:0 \
    --data-dir "$work/$name" --http-access-log false --auth-jwt-secret "$secret" \
    --gateway-ops-per-second 100000 --gateway-messages-per-second 100000 \
    --gateway-max-sessions 100000 "$@" >"$work/$name.out" 2>"$work/$name.err" &
  echo $! >"$work/$name.pid"
  for _ in $(seq 200); do grep -q "running at" "$work/$name.out" && break; sleep 0.05; done
  sed -n 's|.*running at http://[^:]*:\([0-9]*\)/.*|\1|p' "$work/$name.out" | head -1
}

stop_nodes() {
  for f in "$work"/*.pid; do
    [[ -e $f ]] || continue
    kill -TERM "$(cat "$f")" 2>/dev/null || true
    wait "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

# run LABEL RATE PORTS...: one measurement; prints its JSON line with the label and rate.
run() {
  local label=$1 rate=$2
  shift 2
  local interval
  interval=$(python3 -c "print($clients / $rate)")
  local ports=()
  for p in "$@"; do ports+=(--port "$p"); done
  local result
  result=$(build/release/bench/kiln-bench collab "${ports[@]}" --secret "$secret" \
    --clients $clients --room-size $clients --active 1 --cursor-hz 10 \
    --op-interval "$interval" --warmup 2 --duration "$duration" || true)
  python3 -c "
import json, sys
d = json.loads(sys.argv[1]); d['setup'] = sys.argv[2]; d['offered_batches_per_s'] = float(sys.argv[3])
print(json.dumps(d))" "$result" "$label" "$rate"
}

case $mode in
  redis)
    nodes_list=("$@")
    ((${#nodes_list[@]})) || nodes_list=(1 2 3)
    redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --dir "$work" --logfile "$work/redis.log" --pidfile "$work/redis.pidfile"
    for _ in $(seq 100); do redis-cli -p $rport ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
    for n in "${nodes_list[@]}"; do
      ports=()
      for g in $(seq "$n"); do
        ports+=("$(start_node "g$g" gateway --room-engine redis \
          --redis-addresses 127.0.0.1:$rport --redis-prefix "room$n")")
      done
      best=0
      for rate in "${rates[@]}"; do
        line=$(run "redis, $n gateways" "$rate" "${ports[@]}")
        echo "$line"
        if python3 -c "import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d['nacks']==0 and d['ack_p99_ms']<50 and d['acks_per_s']>0.9*d['offered_batches_per_s'] else 1)" "$line"; then
          best=$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['acks_per_s']))" "$line")
        fi
      done
      echo "{\"setup\": \"redis, $n gateways\", \"highest_batches_per_s_kept_up\": $best}"
      stop_nodes
    done
    ;;
  journal)
    for setup in "group" "interval" "off"; do
      case $setup in
        group) args=(--journal-fsync group) ;;
        interval) args=(--journal-fsync interval) ;;
        off) args=(--journal-enabled false) ;;
      esac
      port=$(start_node "serve-$setup" serve "${args[@]}")
      for rate in "${rates[@]}"; do run "serve, journal $setup" "$rate" "$port"; done
      stop_nodes
    done
    ;;
  *)
    echo "usage: bench/run_room.sh redis [NODES...] | journal" >&2
    exit 2
    ;;
esac
