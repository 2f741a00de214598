#!/usr/bin/env bash
# One room, the unit that cannot be sharded: `kiln-bench collab` with every client in one
# room, each sending batches at a fixed rate and a cursor at 10 Hz.
#
#   bash bench/run_room.sh redis [NODES...]      (default: 1 2 3)
#     kiln gateway x NODES on one Redis (started here on port 26500). For each node count:
#     the issue's scenario (60 editors at 10 batches/s each: zero refusals, ack p99 < 50 ms),
#     then the room's ceiling: CEILING_CLIENTS (6) editors at rising offered rates (few
#     members, so that fan-out to 59 peers per batch does not hide the append path). One
#     JSON line per run, with the appends' mean group size and conflicts from the gateways'
#     metrics, and per node count the highest rate kept up (acked >= 90% of offered, no
#     refusal, ack p99 < 50 ms).
#   bash bench/run_room.sh journal
#     kiln serve with the journal on (fsync per group), on (fsync per interval) and off:
#     the same scenario and ceiling, acknowledged batches/s and ack p99 side by side.
#
# Environment: DURATION (s, default 10), RATES (offered batches/s for the ceiling, default
# "1000 2000 5000 10000"), CEILING_CLIENTS. Everything shares this machine, generator
# included.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?redis|journal}
shift
duration=${DURATION:-10}
read -r -a rates <<<"${RATES:-1000 2000 5000 10000}"
ceiling_clients=${CEILING_CLIENTS:-6}
members=$((ceiling_clients > 60 ? ceiling_clients : 60))  # the scenario runs 60 clients
secret=bench-secret-0123456789abcdef0123456789
rport=26500

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

# append_stats PORTS...: "<conflicts> <groups> <batches in groups>" summed over the nodes.
append_stats() {
  for p in "$@"; do curl -s "http://127.0.0.1:$p/metrics"; done | awk '
    /^kiln_room_append_conflicts_total / {c += $2}
    /^kiln_room_append_group_batches_count / {n += $2}
    /^kiln_room_append_group_batches_sum / {b += $2}
    END {printf "%d %d %d\n", c, n, b}'
}

# run LABEL CLIENTS RATE PORTS...: one measurement; prints its JSON line.
run() {
  local label=$1 clients=$2 rate=$3
  shift 3
  local interval
  interval=$(python3 -c "print($clients / $rate)")
  local ports=()
  for p in "$@"; do ports+=(--port "$p"); done
  local before after result
  before=$(append_stats "$@")
  result=$(build/release/bench/kiln-bench collab "${ports[@]}" --secret "$secret" \
    --clients "$clients" --room-size "$clients" --active 1 --cursor-hz 10 \
    --op-interval "$interval" --warmup 2 --duration "$duration" || true)
  after=$(append_stats "$@")
  python3 -c "
import json, sys
d = json.loads(sys.argv[1] or '{}'); d['setup'] = sys.argv[2]; d['offered_batches_per_s'] = float(sys.argv[3])
b = [int(x) for x in sys.argv[4].split()]; a = [int(x) for x in sys.argv[5].split()]
d['append_conflicts'] = a[0] - b[0]
d['append_mean_group'] = round((a[2] - b[2]) / (a[1] - b[1]), 2) if a[1] > b[1] else None
print(json.dumps(d))" "$result" "$label" "$rate" "$before" "$after"
}

# kept_up LINE: prints acks/s if the run kept up (no refusal, ack p99 < 50 ms, >= 90%).
kept_up() {
  python3 -c "
import json, sys
d = json.loads(sys.argv[1])
ok = d.get('nacks', 1) == 0 and 0 < d.get('ack_p99_ms', 1e9) < 50 and d.get('acks_per_s', 0) >= 0.9 * d['offered_batches_per_s']
print(round(d['acks_per_s']) if ok else '')" "$1"
}

# sweep LABEL PORTS...: the scenario, then the ceiling.
sweep() {
  local label=$1 best=0 line k
  shift
  run "$label" 60 600 "$@"
  for rate in "${rates[@]}"; do
    line=$(run "$label" "$ceiling_clients" "$rate" "$@")
    echo "$line"
    k=$(kept_up "$line")
    [[ -n $k ]] && best=$k
  done
  echo "{\"setup\": \"$label\", \"highest_batches_per_s_kept_up\": $best}"
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
      db="sqlite:$work/room$n.db"  # the access the gateways decide joins from
      api=$(start_node "api$n" api --database-url "$db")
      seed_access "$api" "$work/api$n/service-key" "$members" "$members"
      for g in $(seq "$n"); do
        ports+=("$(start_node "g$g" gateway --room-engine redis --database-url "$db" \
          --redis-addresses 127.0.0.1:$rport --redis-prefix "room$n")")
      done
      sweep "redis, $n gateways" "${ports[@]}"
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
      seed_access "$port" "$work/serve-$setup/service-key" "$members" "$members"
      sweep "serve, journal $setup" "$port"
      stop_nodes
    done
    ;;
  *)
    echo "usage: bench/run_room.sh redis [NODES...] | journal" >&2
    exit 2
    ;;
esac
