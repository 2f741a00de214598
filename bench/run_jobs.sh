#!/usr/bin/env bash
# The job queue (kiln-jobs-bench): 10,000 no-op jobs drained by 4 workers as processes with
# one SIGKILLed halfway; then drained by 4 workers in one process and enqueue-to-start
# latency with the workers idle, on the database adapter (SQLite, as `kiln serve`) and
# on RabbitMQ 3.10 (a broker started here on port 36672) over SQLite, each RUNS times,
# alternating. Prints one JSON line per run.
#   bash bench/run_jobs.sh [JOBS] [RUNS]      (default: 10000 2)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-10000}
runs=${2:-2}
source bench/lib.sh
bench_scratch jobs-bench

bash scripts/setup.sh --test >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln-jobs-bench >/dev/null
bin=build/release/bench/kiln-jobs-bench

export RABBITMQ_PORT=36672
trap 'bash tests/servers/rabbitmq.sh stop "$work/rabbitmq" >/dev/null 2>&1; rm -rf "$work"' EXIT
bash tests/servers/rabbitmq.sh start "$work/rabbitmq" >/dev/null

# The same drain with worker processes, one SIGKILLed halfway (its job in flight runs again
# once its 5 s lease has ended).
"$bin" --db "sqlite:$work/dk.db" --jobs "$jobs" --kill-one-halfway --lease-ms 5000 2>/dev/null
"$bin" --db "sqlite:$work/rk.db" --broker "127.0.0.1:$RABBITMQ_PORT" --prefix bench.k \
  --jobs "$jobs" --kill-one-halfway --lease-ms 5000 2>/dev/null

for run in $(seq "$runs"); do
  "$bin" --db "sqlite:$work/d$run.db" --jobs "$jobs" 2>/dev/null
  "$bin" --db "sqlite:$work/r$run.db" --broker "127.0.0.1:$RABBITMQ_PORT" --prefix "bench.$run" \
    --jobs "$jobs" 2>/dev/null
done
