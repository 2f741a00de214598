#!/usr/bin/env bash
# Runs ceph/s3-tests (the S3 conformance suite Ceph RGW and MinIO report against) against the
# embedded object store, `kiln objects`, and summarises the outcome per feature marker.
#
#   tests/conformance/s3-tests.sh [S3_TESTS_DIR] [-- PYTEST_ARGS...]
#
# S3_TESTS_DIR: a checkout of https://github.com/ceph/s3-tests (default $KILN_S3_TESTS). When it
# is absent the script says so and exits 0 (skipped). The suite's Python dependencies come from
# Debian (the list below). KILN_BIN: the binary (default build/dev/src/app/kiln). Results go to
# $OUT (default build/s3-tests): report.jsonl (one line per test), summary.md (the table in
# docs/objects.md), pytest.log.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
suite="${1:-${KILN_S3_TESTS:-}}"
[[ $# -gt 0 && "$1" != "--" ]] && shift
[[ "${1:-}" == "--" ]] && shift
if [[ -z "$suite" || ! -f "$suite/s3tests/functional/test_s3.py" ]]; then
  echo "s3-tests: skipped: no ceph/s3-tests checkout at '${suite:-<none given>}'" >&2
  echo "  get one (git clone https://github.com/ceph/s3-tests) and pass its path, or set KILN_S3_TESTS" >&2
  exit 0
fi
suite="$(cd "$suite" && pwd)"
bin="${KILN_BIN:-$root/build/dev/src/app/kiln}"
[[ -x "$bin" ]] || { echo "s3-tests: no kiln binary at $bin (build first, or set KILN_BIN)" >&2; exit 1; }
py=/usr/bin/python3
missing=()
for m in boto3 botocore pytest pytest_timeout munch lxml isodate requests yaml gevent pytz httplib2; do
  "$py" -c "import $m" 2>/dev/null || missing+=("$m")
done
if ((${#missing[@]})); then
  echo "s3-tests: missing Python modules: ${missing[*]}; install them with" >&2
  echo "  apt-get install -y --no-install-recommends python3-boto3 python3-botocore python3-pytest python3-pytest-timeout python3-munch python3-lxml python3-isodate python3-requests python3-yaml python3-gevent python3-tz python3-httplib2" >&2
  exit 1
fi

out="${OUT:-$root/build/s3-tests}"
mkdir -p "$out"
work="$(mktemp -d)"
secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The secret goes by environment, not argv (other users can read argv). Both listeners on
# port 0 (the store's is read back from its log; the health listener would take 7700 from a
# running `kiln serve`).
# (KILN_BIN and KILN_S3_TESTS are this script's; kiln refuses KILN_* names it does not know.)
env -u KILN_BIN -u KILN_S3_TESTS KILN_OBJECTS_SECRET_KEY="$secret" "$bin" objects --data-dir "$work/data" \
  --objects-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --objects-virtual-host-domain "" --http-access-log false \
  --log-format json --log-level info >"$out/kiln.log" 2>&1 &
kiln_pid=$!
cleanup() { kill "$kiln_pid" 2>/dev/null || true; wait "$kiln_pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=
for _ in $(seq 100); do
  port="$("$py" -c 'import json, sys
for line in open(sys.argv[1]):
    if line.startswith("{") and json.loads(line).get("msg") == "object store listening":
        print(json.loads(line)["port"]); break' "$out/kiln.log")"
  [[ -n "$port" ]] && break
  kill -0 "$kiln_pid" 2>/dev/null || { cat "$out/kiln.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$port" ]] || { echo "the store did not say where it listens" >&2; cat "$out/kiln.log" >&2; exit 1; }

# Every user the suite knows is the store's one credential: tests that need a second user
# fail for that reason alone (the store has one identity by design).
conf="$work/s3tests.conf"
{
  printf '[DEFAULT]\nhost = 127.0.0.1\nport = %s\nis_secure = False\nssl_verify = False\n\n' "$port"
  printf '[fixtures]\nbucket prefix = kiln-{random}-\niam name prefix = s3-tests-\niam path prefix = /s3-tests/\n\n'
  for section in "s3 main" "s3 alt" "s3 tenant" "iam" "iam root" "iam alt root"; do
    printf '[%s]\ndisplay_name = kiln\nuser_id = kiln\nemail = kiln@example.com\n' "$section"
    printf 'access_key = kiln\nsecret_key = %s\n' "$secret"
    [[ "$section" == "s3 main" ]] && printf 'api_name = us-east-1\nlc_debug_interval = 1\nrgw_restore_debug_interval = 1\nrgw_restore_processor_period = 1\n'
    [[ "$section" == "s3 tenant" ]] && printf 'tenant = kiln\n'
    printf '\n'
  done
} >"$conf"

echo "s3-tests: $suite against kiln objects on 127.0.0.1:$port; log in $out/pytest.log" >&2
status=0
(cd "$suite" && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$here" S3TEST_CONF="$conf" AWS_DEFAULT_REGION=us-east-1 \
  KILN_S3_TESTS_REPORT="$out/report.jsonl" \
  "$py" -m pytest -p no:cacheprovider -p s3_tests_report -q -rN --timeout=120 \
  "${@:-s3tests/functional/test_s3.py}") >"$out/pytest.log" 2>&1 || status=$?
"$py" "$here/s3_tests_summary.py" "$out/report.jsonl" | tee "$out/summary.md"
tail -n 1 "$out/pytest.log" >&2
# pytest exits 1 when tests failed (expected: the summary says which); anything else is an error.
[[ $status -le 1 ]] || { echo "s3-tests: pytest exited $status (see $out/pytest.log)" >&2; exit "$status"; }
