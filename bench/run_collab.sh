#!/usr/bin/env bash
# Runs `kiln-bench collab` against a fresh release `kiln serve` for each client count and
# prints one JSON line per run, then the largest count that met the targets
# (op p99 < 50 ms, cursor p99 < 100 ms). The generator and the gateway share the machine.
#
#   bash bench/run_collab.sh [N ...]          (default: 1000 2000 3000 5000 10000)
#   DURATION=20 THREADS=1 bash bench/run_collab.sh 2000
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
((${#counts[@]})) || counts=(1000 2000 3000 5000 10000)
duration=${DURATION:-15}
threads=${THREADS:-1}
secret=bench-secret-0123456789abcdef0123456789

bash scripts/setup.sh --test >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln kiln-bench >/dev/null
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
source bench/lib.sh

best=0
for n in "${counts[@]}"; do
  data=$(mktemp -d)
  out=$(mktemp)
  build/release/src/app/kiln serve --http-listen 127.0.0.1:0 --data-dir "$data" \
    --http-access-log false --runtime-threads "$threads" --auth-jwt-secret "$secret" \
    --gateway-max-sessions 100000 >"$out" 2>/dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q "running at" "$out" && break; sleep 0.1; done
  port=$(banner_port "$out")
  seed_access "$port" "$data/service-key" "$n" 20
  result=$(build/release/bench/kiln-bench collab --port "$port" --secret "$secret" \
    --clients "$n" --warmup 3 --duration "$duration" || true)
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$data" "$out"
  echo "$result"
  if python3 -c "import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d['joined']==d['clients'] and d['op_p99_ms']<50 and d['cursor_p99_ms']<100 else 1)" "$result"; then
    best=$n
  fi
done
echo "largest client count meeting the targets: $best"
