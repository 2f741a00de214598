#!/usr/bin/env bash
# `kiln-bench collab` against two `kiln gateway` nodes sharing one Redis (started here on
# port 26500), clients spread over both so that most rooms span the two nodes. Prints one
# JSON line per client count, with Redis commands per second and Redis CPU added, then
# the largest count meeting op p99 < 100 ms and cursor p99 < 150 ms. Everything shares
# this machine.
#   bash bench/run_collab_redis.sh [N ...]      (default: 1000 2000 3000)
#   GEN_ARGS="--active 0.005 --op-interval 60" bash bench/run_collab_redis.sh 10000
#                                               (the activity scaled down; kiln-bench collab --help)
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
((${#counts[@]})) || counts=(1000 2000 3000)
duration=${DURATION:-15}
secret=bench-secret-0123456789abcdef0123456789
rport=26500

bash scripts/setup.sh --test >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln kiln-bench >/dev/null
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
source bench/lib.sh

redis_stat() {  # total_commands_processed used_cpu_user+used_cpu_sys
  redis-cli -p $rport info all | tr -d '\r' | awk -F: '
    /^total_commands_processed/ {c=$2} /^used_cpu_sys:/ {s=$2} /^used_cpu_user:/ {u=$2}
    END {print c, s+u}'
}

best=0
for n in "${counts[@]}"; do
  work=$(mktemp -d)
  redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$work" --logfile "$work/redis.log"
  for _ in $(seq 100); do redis-cli -p $rport ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  pids=() ports=()
  # The access the gateways decide joins from: one database, written through a `kiln api`.
  db="sqlite:$work/kiln.db"
  build/release/src/app/kiln api --http-listen 127.0.0.1:0 --data-dir "$work/api" \
    --http-access-log false --database-url "$db" >"$work/api.out" 2>"$work/api.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q "running at" "$work/api.out" && break; sleep 0.1; done
  seed_access "$(banner_port "$work/api.out")" "$work/api/service-key" "$n" 20
  for g in 1 2; do
    build/release/src/app/kiln gateway --http-listen 127.0.0.1:0 --data-dir "$work/g$g" \
      --http-access-log false --runtime-threads 1 --auth-jwt-secret "$secret" \
      --room-engine redis --redis-addresses 127.0.0.1:$rport --gateway-max-sessions 100000 \
      --database-url "$db" >"$work/g$g.out" 2>"$work/g$g.err" &
    pids+=($!)
  done
  for g in 1 2; do
    for _ in $(seq 100); do grep -q "running at" "$work/g$g.out" && break; sleep 0.1; done
    ports+=(--port "$(banner_port "$work/g$g.out")")
  done
  read -r c0 cpu0 < <(redis_stat)
  t0=$(date +%s.%N)
  result=$(build/release/bench/kiln-bench collab "${ports[@]}" --secret "$secret" \
    --clients "$n" --warmup 3 --duration "$duration" ${GEN_ARGS:-} || true)
  read -r c1 cpu1 < <(redis_stat)
  t1=$(date +%s.%N)
  kill -TERM "${pids[@]}"; wait "${pids[@]}" || true
  redis-cli -p $rport shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
  # Redis figures cover the whole run (connect, warm-up and measurement).
  python3 -c "
import json, sys
d = json.loads(sys.argv[1]); secs = float(sys.argv[5]) - float(sys.argv[4])
d['redis_commands_per_s'] = (int(sys.argv[3]) - int(sys.argv[2])) / secs
d['redis_cpu_cores'] = (float(sys.argv[7]) - float(sys.argv[6])) / secs
print(json.dumps(d))" "$result" "$c0" "$c1" "$t0" "$t1" "$cpu0" "$cpu1" | tee /dev/stderr >/dev/null
  if python3 -c "import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d['joined']==d['clients'] and d['op_p99_ms']<100 and d['cursor_p99_ms']<150 else 1)" "$result"; then
    best=$n
  fi
done
echo "largest client count meeting the targets: $best"
