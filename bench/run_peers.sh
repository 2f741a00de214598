#!/usr/bin/env bash
# Kiln's gateway and its peers in one run, one generator, one workload (`kiln-bench collab`:
# rooms of 20, 10% of clients at 60 Hz cursors, an op per client every 10 s): `kiln serve`
# against bench/peers/socketio-relay.js (socket.io 4) and bench/peers/yws-relay.mjs
# (y-websocket), and two `kiln gateway` nodes on Redis against two socket.io nodes with
# @socket.io/redis-adapter on Redis (y-websocket has no second node). Prints one JSON line
# per run (`server`, `nodes` added; with two nodes the servers' CPU includes Redis's), then a
# table of ratios to Kiln and the largest client count each met the targets at (op p99 /
# cursor p99 under 50 / 100 ms on one node, 100 / 150 ms on two). Everything shares this
# machine.
#   bash bench/run_peers.sh [N ...]        (default: 500 1000 2000)
#   NODES=1 DURATION=10 bash bench/run_peers.sh 1000
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
((${#counts[@]})) || counts=(500 1000 2000)
duration=${DURATION:-15}
read -r -a node_counts <<<"${NODES:-1 2}"
secret=bench-secret-0123456789abcdef0123456789
rport=26501

bash scripts/setup.sh --test >/dev/null
bash scripts/npm-ci.sh bench/peers >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln kiln-bench >/dev/null
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
source bench/lib.sh
bench_scratch peers
results="$work/results.jsonl"

# wait_for FILE PATTERN: until the file holds the pattern (10 s at most).
wait_for() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "run_peers: no '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}
stop_servers() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  pids=()
}
start_redis() {  # sets redis_pid
  redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly no --dir "$1" \
    --logfile "$1/redis.log" &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do redis-cli -p $rport ping 2>/dev/null | grep -q PONG && return 0; sleep 0.05; done
  return 1
}

# run SERVER NODES N: starts the servers, runs the generator, records its line.
run() {
  local server=$1 nodes=$2 n=$3 dir gen=() p
  dir=$(mktemp -d "$work/run-XXXXXX")
  if [[ $server == kiln && $nodes == 1 ]]; then
    build/release/src/app/kiln serve --http-listen 127.0.0.1:0 --data-dir "$dir" \
      --http-access-log false --runtime-threads 1 --auth-jwt-secret "$secret" \
      --gateway-max-sessions 100000 >"$dir/out" 2>"$dir/err" &
    pids+=($!)
    gen+=(--pid $!)
    wait_for "$dir/out" "running at"
    p=$(banner_port "$dir/out")
    seed_access "$p" "$dir/service-key" "$n" 20
    gen+=(--port "$p" --secret "$secret")
  elif [[ $server == kiln ]]; then
    start_redis "$dir"
    gen+=(--pid "$redis_pid")
    build/release/src/app/kiln api --http-listen 127.0.0.1:0 --data-dir "$dir/api" \
      --http-access-log false --database-url "sqlite:$dir/kiln.db" >"$dir/api.out" 2>"$dir/api.err" &
    pids+=($!)
    wait_for "$dir/api.out" "running at"
    seed_access "$(banner_port "$dir/api.out")" "$dir/api/service-key" "$n" 20
    for g in $(seq "$nodes"); do
      build/release/src/app/kiln gateway --http-listen 127.0.0.1:0 --data-dir "$dir/g$g" \
        --http-access-log false --runtime-threads 1 --auth-jwt-secret "$secret" \
        --room-engine redis --redis-addresses 127.0.0.1:$rport --gateway-max-sessions 100000 \
        --database-url "sqlite:$dir/kiln.db" >"$dir/g$g.out" 2>"$dir/g$g.err" &
      pids+=($!)
      gen+=(--pid $!)
    done
    for g in $(seq "$nodes"); do
      wait_for "$dir/g$g.out" "running at"
      gen+=(--port "$(banner_port "$dir/g$g.out")")
    done
    gen+=(--secret "$secret")
  elif [[ $server == yjs ]]; then
    PORT=0 node bench/peers/yws-relay.mjs >"$dir/y.out" 2>"$dir/y.err" &
    pids+=($!)
    gen+=(--pid $!)
    wait_for "$dir/y.out" "listening on"
    gen+=(--port "$(grep -oE '[0-9]+$' "$dir/y.out" | head -1)" --protocol yjs)
  else
    local env=()
    if ((nodes > 1)); then
      start_redis "$dir"
      gen+=(--pid "$redis_pid")
      env=(REDIS_URL="redis://127.0.0.1:$rport")
    fi
    for g in $(seq "$nodes"); do
      env "${env[@]}" PORT=0 node bench/peers/socketio-relay.js >"$dir/s$g.out" 2>"$dir/s$g.err" &
      pids+=($!)
      gen+=(--pid $!)
    done
    for g in $(seq "$nodes"); do
      wait_for "$dir/s$g.out" "listening on"
      gen+=(--port "$(grep -oE '[0-9]+$' "$dir/s$g.out" | head -1)")
    done
    gen+=(--protocol socketio)
  fi
  local line
  line=$(build/release/bench/kiln-bench collab "${gen[@]}" --clients "$n" --warmup 3 \
    --duration "$duration" ${GEN_ARGS:-} || true)
  stop_servers
  if [[ -z $line ]]; then
    echo "run_peers: $server x$nodes at $n clients gave no result; its logs:" >&2
    tail -n 20 "$dir"/*.err >&2 || true
    return 0
  fi
  python3 -c "
import json, sys
d = json.loads(sys.argv[1]); d['server'] = sys.argv[2]; d['nodes'] = int(sys.argv[3])
print(json.dumps(d))" "$line" "$server" "$nodes" | tee -a "$results"
}

for nodes in "${node_counts[@]}"; do
  for n in "${counts[@]}"; do
    for server in kiln socketio yjs; do
      [[ $server == yjs ]] && ((nodes > 1)) && continue
      run "$server" "$nodes" "$n"
    done
  done
done

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
key = lambda d: (d["nodes"], d["clients"])
kiln = {key(d): d for d in rows if d["server"] == "kiln"}
def within(d):
    op, cur = (50, 100) if d["nodes"] == 1 else (100, 150)
    return d["joined"] == d["clients"] and d["op_p99_ms"] < op and d["cursor_p99_ms"] < cur
print()
# The same workload, not the same frames: Kiln and the socket.io relay batch cursors per
# room every 50 ms, y-websocket sends each update to each member. Server CPU for the
# workload (cores) compares the work; CPU per delivered frame, each one's unit cost.
cores = lambda d: d.get("server_cpu_us_per_frame", 0) * d["delivered_msgs_per_s"] / 1e6
print("| server | nodes | clients | frames/s | server CPU, cores (vs Kiln) | user / sys us per frame"
      " | CPU per frame vs Kiln | op p50 / p99 ms | cursor p50 / p99 ms"
      " | bytes per idle connection (vs Kiln) |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for d in sorted(rows, key=lambda d: (d["nodes"], d["clients"], d["server"])):
    k = kiln.get(key(d), {})
    cpu = d.get("server_cpu_us_per_frame")
    ratio = cpu / k["server_cpu_us_per_frame"] if cpu and k.get("server_cpu_us_per_frame") else None
    mem = d.get("gateway_bytes_per_idle_connection")
    kmem = k.get("gateway_bytes_per_idle_connection")
    print("| %s | %d | %d | %.0f | %s | %s | %s | %.1f / %.1f | %.1f / %.1f | %s |" % (
        d["server"], d["nodes"], d["clients"], d["delivered_msgs_per_s"],
        "%.2f (%.2fx)" % (cores(d), cores(d) / cores(k)) if cpu and k and cores(k) else "-",
        "%.1f / %.1f" % (d["server_user_us_per_frame"], d["server_sys_us_per_frame"])
        if cpu else "-", "%.2fx" % ratio if ratio else "-",
        d["op_p50_ms"], d["op_p99_ms"], d["cursor_p50_ms"], d["cursor_p99_ms"],
        "%.0f (%.2fx)" % (mem, mem / kmem) if mem and kmem else "-"))
print()
for nodes in sorted({d["nodes"] for d in rows}):
    for server in ("kiln", "socketio", "yjs"):
        ran = [d for d in rows if d["server"] == server and d["nodes"] == nodes]
        if not ran:
            continue
        ok = [d["clients"] for d in ran if within(d)]
        print("largest client count within the targets, %s x%d: %s" % (server, nodes, max(ok) if ok else 0))
EOF
