#!/usr/bin/env bash
# Persister throughput (rooms stored per second) into SQLite and into PostgreSQL 15 through
# PgBouncer in transaction mode (servers started here on ports 35432-35433 and 36432), with
# 1 and 2 workers. Prints one JSON line per run.
#   bash bench/run_persist.sh [ROOMS] [ENTITIES]      (default: 2000 100)
set -euo pipefail
cd "$(dirname "$0")/.."
rooms=${1:-2000}
entities=${2:-100}

bash scripts/setup.sh --test >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln-persist-bench >/dev/null
bin=build/release/bench/kiln-persist-bench

work=$(mktemp -d /tmp/kiln-persist-bench-XXXXXX)
export PG_PORT=35432 PGB_PORT=36432
trap 'bash tests/servers/postgres.sh stop "$work/pg" >/dev/null 2>&1; rm -rf "$work"' EXIT
bash tests/servers/postgres.sh start "$work/pg" >/dev/null

n=0
for workers in 1 2; do
  n=$((n + 1))
  "$bin" --db "sqlite:$work/s$n.db" --rooms "$rooms" --entities "$entities" --workers "$workers"
  psql -h 127.0.0.1 -p $PG_PORT -U postgres -d postgres -qc "CREATE DATABASE b$n" >/dev/null
  "$bin" --db "postgresql://postgres@127.0.0.1:$PGB_PORT/b$n" --rooms "$rooms" \
    --entities "$entities" --workers "$workers"
done
