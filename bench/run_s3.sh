#!/usr/bin/env bash
# Object store throughput on loopback: `kiln objects` (release build) and s3rver (npm) in
# the same run, through Kiln's S3 client: one PUT, one multipart upload (16 MiB parts, 4 in
# parallel) and one GET of a SIZE_MIB object. Then the memory test: ten multipart uploads
# of UPLOAD_MIB at once into `kiln objects`, with its resident memory before and at peak.
#   bash bench/run_s3.sh [SIZE_MIB] [UPLOAD_MIB]      (default: 512 500)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-512}
upload=${2:-500}

bash scripts/setup.sh --test >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln kiln-s3-bench >/dev/null
bash tests/servers/npm.sh build/release/test-npm
source bench/lib.sh
bench_scratch s3-bench

secret=bench-objects-secret-0123456789abcdef
head -c $((size << 20)) /dev/urandom >"$work/object.bin"
head -c $((upload << 20)) /dev/urandom >"$work/upload.bin"

build/release/src/app/kiln objects --data-dir "$work/kiln" --objects-listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --objects-secret-key "$secret" --log-level warn >/dev/null 2>"$work/kiln.err" &
pids+=($!)
kiln_pid=$!
# The store logs its port at info; ask the process for its listening sockets instead.
for _ in $(seq 100); do
  port=$(ss -ltnp 2>/dev/null | awk -v pid="pid=$kiln_pid," '$0 ~ pid {split($4, a, ":"); print a[2]}' | sort -n | tail -1)
  [[ -n "$port" ]] && break
  sleep 0.1
done

s3port=$((20000 + RANDOM % 10000))
mkdir -p "$work/s3rver"
NODE_OPTIONS=--openssl-legacy-provider build/release/test-npm/node_modules/.bin/s3rver \
  --directory "$work/s3rver" --port "$s3port" --address 127.0.0.1 --silent --configure-bucket kiln &
pids+=($!)
sleep 1

bench=build/release/bench/kiln-s3-bench
# Both servers listen on two ports each (kiln: HTTP API and objects); try each kiln port.
for p in $(ss -ltnp 2>/dev/null | awk -v pid="pid=$kiln_pid," '$0 ~ pid {split($4, a, ":"); print a[2]}'); do
  if "$bench" --endpoint "http://127.0.0.1:$p" --key kiln --secret "$secret" --file "$work/object.bin" \
      --name "kiln objects" 2>/dev/null; then
    port=$p
    break
  fi
done
"$bench" --endpoint "http://127.0.0.1:$s3port" --key S3RVER --secret S3RVER --file "$work/object.bin" --name s3rver

rss() { awk '/^VmRSS/ {print $2}' "/proc/$kiln_pid/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$kiln_pid/status"; }
before=$(rss)
"$bench" --endpoint "http://127.0.0.1:$port" --key kiln --secret "$secret" --file "$work/upload.bin" \
  --name "kiln objects" --uploads 10
echo "{\"kiln_objects_rss_before_kib\": $before, \"kiln_objects_rss_peak_kib\": $(hwm), \"growth_mib\": $(( ($(hwm) - before) / 1024 ))}"
