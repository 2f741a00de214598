#!/usr/bin/env bash
# The gateway against the floor, in one run: `kiln serve` and `kiln-floor` (a minimal epoll
# relay sending the same frames in the same pattern, bench/floor_server.cpp) each take the
# same `kiln-bench collab` workload in turn; prints each run's JSON line, then one line with
# the CPU per delivered frame of each (user and system apart) and their ratio.
#
#   bash bench/run_floor.sh [CLIENTS]          (default 2000; rooms of 20, 10% at 60 Hz)
#   PRESET=dev DURATION=4 bash bench/run_floor.sh 300       (scripts/check_floor.sh's run)
#
# The ratio, not the microseconds, is the result: both servers share this machine's kernel,
# load and clock in the same minute.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-2000}
preset=${PRESET:-release}
duration=${DURATION:-15}
warmup=${WARMUP:-3}
secret=bench-secret-0123456789abcdef0123456789

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  bash scripts/setup.sh --test >/dev/null
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" --target kiln kiln-bench kiln-floor >/dev/null
fi
build=build/$preset
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
source bench/lib.sh
bench_scratch floor

# wait_port LOG: the port a server printed ("running at http://...:PORT/" or "listening on PORT").
wait_port() {
  for _ in $(seq 300); do
    local p
    p=$(grep -oE 'running at http://[0-9.]+:[0-9]+|listening on [0-9]+' "$1" | grep -oE '[0-9]+$' | head -1)
    [[ -n $p ]] && { echo "$p"; return; }
    sleep 0.1
  done
  echo "no port in $1" >&2
  cat "$1" >&2
  return 1
}

generate() {  # PORT PID
  "$build/bench/kiln-bench" collab --port "$1" --pid "$2" --secret "$secret" \
    --clients "$clients" --warmup "$warmup" --duration "$duration"
}

"$build/src/app/kiln" serve --http-listen 127.0.0.1:0 --data-dir "$work/kiln" \
  --http-access-log false --runtime-threads 1 --auth-jwt-secret "$secret" \
  --gateway-max-sessions 100000 >"$work/kiln.log" 2>&1 &
kiln=$!
pids+=("$kiln")
port=$(wait_port "$work/kiln.log")
seed_access "$port" "$work/kiln/service-key" "$clients" 20 >/dev/null
kiln_run=$(generate "$port" "$kiln")
kill -TERM "$kiln"
wait "$kiln" || true
echo "$kiln_run"

"$build/bench/kiln-floor" >"$work/floor.log" 2>&1 &
floor=$!
pids+=("$floor")
port=$(wait_port "$work/floor.log")
floor_run=$(generate "$port" "$floor")
kill -TERM "$floor"
wait "$floor" || true
echo "$floor_run"

python3 - "$kiln_run" "$floor_run" <<'EOF'
import json, sys
k, f = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name, run in (("kiln", k), ("floor", f)):
    if run["joined"] != run["clients"] or "server_cpu_us_per_frame" not in run:
        sys.exit(f"{name}: {run['joined']} of {run['clients']} joined, or no CPU read: {run}")
out = {"clients": k["clients"],
       "kiln_frames_per_s": round(k["delivered_msgs_per_s"]),
       "floor_frames_per_s": round(f["delivered_msgs_per_s"])}
for part in ("user", "sys", "cpu"):
    out[f"kiln_{part}_us"] = round(k[f"server_{part}_us_per_frame"], 2)
    out[f"floor_{part}_us"] = round(f[f"server_{part}_us_per_frame"], 2)
out["cpu_ratio"] = round(k["server_cpu_us_per_frame"] / f["server_cpu_us_per_frame"], 2)
out["user_ratio"] = round(k["server_user_us_per_frame"] / max(f["server_user_us_per_frame"], 1e-9), 1)
print(json.dumps(out))
EOF
