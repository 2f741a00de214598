#!/usr/bin/env bash
# The gateway's cost per delivered frame, guarded as a ratio: bench/run_floor.sh runs `kiln
# serve` and `kiln-floor` (the kernel's floor: the same frames, a minimal epoll sender) on
# one small workload in one run, and this fails when the gateway's CPU per frame over the
# floor's is more than 1.5x the ratio committed in bench/floor-ratio.json. A ratio, so a
# slower or busier machine does not trip it; a regression in the gateway's own work does.
# Needs the dev build (scripts/test.sh runs it after the dev tests).
#
#   bash scripts/check_floor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
committed=$(python3 -c 'import json; print(json.load(open("bench/floor-ratio.json"))["cpu_ratio"])')
line=$(PRESET=dev SKIP_BUILD=1 DURATION=4 WARMUP=1 bash bench/run_floor.sh 300 | tail -1)
echo "$line"
python3 - "$line" "$committed" <<'PY'
import json, sys
run, committed = json.loads(sys.argv[1]), float(sys.argv[2])
limit = 1.5 * committed
verdict = "ok" if run["cpu_ratio"] <= limit else "FAILED"
print(f"floor guard: {verdict}: the gateway's CPU per delivered frame is {run['cpu_ratio']}x "
      f"the floor's (committed {committed}x, the limit {limit:.2f}x: bench/floor-ratio.json)")
sys.exit(0 if verdict == "ok" else 1)
PY
