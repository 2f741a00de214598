#!/usr/bin/env bash
# Memory while uploads run: `kiln api` (SQLite) and `kiln objects` as separate processes
# (release build), ten `kiln upload` runs of a SIZE_MIB file at once (ten projects, four
# parts in flight each), with each server's resident memory after a warm-up upload
# (the peak counter reset there) and at its peak. The API signs parts and, at completion,
# reads each object back through SHA-256; the store receives every byte.
#   bash bench/run_uploads.sh [SIZE_MIB] [UPLOADS]      (default: 500 10)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-500}
uploads=${2:-10}

bash scripts/setup.sh --test >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln >/dev/null
kiln=build/release/src/app/kiln
source bench/lib.sh
bench_scratch upload-bench

secret=bench-objects-secret-0123456789abcdef
key=bench-service-key-0123456789abcdef0123456789
oport=$((20000 + RANDOM % 10000))
aport=$((oport + 1))
head -c $((size << 20)) /dev/urandom >"$work/file.bin"
head -c $((1 << 20)) /dev/urandom >"$work/warm.bin"

"$kiln" objects --data-dir "$work/objects" --objects-listen "127.0.0.1:$oport" \
  --http-listen 127.0.0.1:0 --objects-secret-key "$secret" --log-level warn 2>"$work/objects.err" &
opid=$!
pids+=($opid)
"$kiln" api --data-dir "$work/api" --http-listen "127.0.0.1:$aport" --objects-listen 127.0.0.1:0 \
  --storage-endpoint "http://127.0.0.1:$oport" --storage-secret-key "$secret" \
  --api-service-key "$key" --api-user-requests-per-second 1000 --log-level warn \
  >"$work/api.out" 2>"$work/api.err" &
apid=$!
pids+=($apid)

# Both print their URL line on stdout once listening; the API's is in api.out.
for _ in $(seq 200); do grep -q "running at" "$work/api.out" 2>/dev/null && break; sleep 0.05; done

python3 - "$aport" "$key" "$uploads" >"$work/env" <<'EOF'
import http.client, json, sys
port, key, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def post(path, tok, body):
    c = http.client.HTTPConnection("127.0.0.1", port)
    c.request("POST", path, json.dumps(body), {"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    r = c.getresponse()
    d = json.loads(r.read())
    assert r.status in (200, 201), d
    return d
tok = post("/v1/tokens", key, {"user": {"id": "bench"}, "ttl_s": 86400})["token"]
for i in range(n + 1):
    post("/v1/projects", tok, {"id": f"bench{i}", "name": f"Bench {i}"})
print(f"export KILN_TOKEN={tok}")
EOF
source "$work/env"

up() { "$kiln" upload "$1" --project "$2" --api "http://127.0.0.1:$aport" --state-dir "$work/state-$2" --no-progress; }
up "$work/warm.bin" bench0 >/dev/null 2>&1  # warm-up: pools, connections, threads
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
echo 5 >"/proc/$apid/clear_refs"
echo 5 >"/proc/$opid/clear_refs"
a_before=$(rss $apid)
o_before=$(rss $opid)

start=$(date +%s.%N)
upids=()
for i in $(seq 1 "$uploads"); do
  up "$work/file.bin" "bench$i" >"$work/up$i.out" 2>"$work/up$i.err" &
  upids+=($!)
done
failed=0
for p in "${upids[@]}"; do wait "$p" || failed=1; done
end=$(date +%s.%N)
if [[ $failed != 0 ]]; then
  cat "$work"/up*.err >&2
  exit 1
fi
a_peak=$(hwm $apid)
o_peak=$(hwm $opid)
python3 - <<EOF
import json
size, n, secs = $size, $uploads, $end - $start
print(json.dumps({
  "uploads": n, "size_mib": size, "seconds": round(secs, 1),
  "aggregate_mib_per_s": round(n * size / secs, 1),
  "api_rss_before_kib": $a_before, "api_rss_peak_kib": $a_peak,
  "api_growth_mib": round(($a_peak - $a_before) / 1024, 2),
  "objects_rss_before_kib": $o_before, "objects_rss_peak_kib": $o_peak,
  "objects_growth_mib": round(($o_peak - $o_before) / 1024, 2),
}))
EOF
