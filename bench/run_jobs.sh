#!/usr/bin/env bash
# The job queue (kiln-jobs-bench): 10,000 no-op jobs drained by 4 workers as processes with
# one SIGKILLed halfway; then drained by 4 workers in one process and enqueue-to-start
# latency with the workers idle, on the database adapter and on RabbitMQ 3.10 (a broker
# started here on port 36672), each over SQLite (as `kiln serve`) and over PostgreSQL 15
# through PgBouncer in transaction mode (started here on ports 35432/36432; a database per
# run), each RUNS times, alternating. Prints one JSON line per run.
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

export RABBITMQ_PORT=36672 PG_PORT=35432 PGB_PORT=36432
stop() {
  bash tests/servers/rabbitmq.sh stop "$work/rabbitmq" >/dev/null 2>&1
  bash tests/servers/postgres.sh stop "$work/pg" >/dev/null 2>&1
  rm -rf "$work"
}
trap stop EXIT
bash tests/servers/rabbitmq.sh start "$work/rabbitmq" >/dev/null
bash tests/servers/postgres.sh start "$work/pg" >/dev/null
# A fresh database on the primary, reached through PgBouncer (its `*` entry).
pg() {
  runuser -u postgres -- psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE $1" >/dev/null
  echo "postgresql://postgres@127.0.0.1:$PGB_PORT/$1"
}

# The same drain with worker processes, one SIGKILLed halfway (its job in flight runs again
# once its 5 s lease has ended).
"$bin" --db "sqlite:$work/dk.db" --jobs "$jobs" --kill-one-halfway --lease-ms 5000 2>/dev/null
"$bin" --db "sqlite:$work/rk.db" --broker "127.0.0.1:$RABBITMQ_PORT" --prefix bench.k \
  --jobs "$jobs" --kill-one-halfway --lease-ms 5000 2>/dev/null

for run in $(seq "$runs"); do
  "$bin" --db "sqlite:$work/d$run.db" --jobs "$jobs" 2>/dev/null
  "$bin" --db "sqlite:$work/r$run.db" --broker "127.0.0.1:$RABBITMQ_PORT" --prefix "bench.$run" \
    --jobs "$jobs" 2>/dev/null
  "$bin" --db "$(pg "bench_d$run")" --jobs "$jobs" 2>/dev/null
  "$bin" --db "$(pg "bench_r$run")" --broker "127.0.0.1:$RABBITMQ_PORT" --prefix "bench.pg.$run" \
    --jobs "$jobs" 2>/dev/null
done
