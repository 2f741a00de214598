#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is missing, checks
# formatting, then builds and tests each preset (default: dev, asan, then fuzz). The output ends
# with the last preset's CTest summary; the exit code is non-zero if anything failed.
#
#   bash scripts/test.sh            # dev + asan + fuzz, every label
#   bash scripts/test.sh dev        # one preset
#   CTEST_ARGS="-L unit" bash scripts/test.sh dev
set -uo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
presets=("$@")
((${#presets[@]})) || presets=(dev asan fuzz)

bash scripts/setup.sh --test || exit 1

status=0
step() { printf '\n== %s (%ss)\n' "$1" "$(($(date +%s) - started))"; }
# The output of each failed test again, last 60 lines each, after the summary: a CI log
# that keeps only its tail still says why.
failures() {
  step "what the failed tests printed"
  awk '/^[0-9]+\/[0-9]+ Testing: /{n=0; name=$0} {buf[n++]=$0}
       /^Test Failed\./{print "--- " name; for (i = (n > 60 ? n - 60 : 0); i < n; i++) print buf[i]}' "$1"
}

step "clang-format check"
mapfile -t sources < <(find src tests bench fuzz -name '*.cpp' -o -name '*.hpp' 2>/dev/null | sort)
if ((${#sources[@]})) && ! clang-format --dry-run -Werror "${sources[@]}"; then
  echo "clang-format: the files above need formatting (clang-format -i FILE)"
  status=1
fi

step "layering check"
# Each library includes only what its row allows; Asio/Beast only in the listed files.
/usr/bin/python3 scripts/check_layering.py src || status=1

# Each integration and end-to-end test runs once: when the asan preset runs too, the dev run
# runs the unit tier (a failure shows before the sanitized build) and only the tests that
# need the unsanitized build (label full-speed, harness.full_speed: minutes of work,
# RLIMIT_AS, kiln-bench); the asan run runs every test.
with_asan=0
for preset in "${presets[@]}"; do [[ $preset == asan ]] && with_asan=1; done

jobs=$(nproc)
for preset in "${presets[@]}"; do
  step "configure + build ($preset)"
  if ! { cmake --preset "$preset" >/dev/null && cmake --build --preset "$preset"; }; then
    echo "build failed for preset $preset"
    status=1
    continue
  fi
  step "tests ($preset)"
  select=()
  if [[ $preset == dev && $with_asan == 1 ]]; then
    select=(-L "^(unit|full-speed)\$")
    export KILN_E2E_FULL_SPEED_ONLY=1
  fi
  # shellcheck disable=SC2086
  if ! ctest --preset "$preset" -j"$jobs" "${select[@]}" ${CTEST_ARGS:-}; then
    status=1
    failures "build/$preset/Testing/Temporary/LastTest.log"
  fi
  unset KILN_E2E_FULL_SPEED_ONLY
  if [[ $preset == dev ]]; then
    step "floor guard (dev)"
    bash scripts/check_floor.sh 2>&1 | grep -v '^seed_access' || status=1
  fi
done
exit $status
