# Sourced by the bench scripts: a scratch directory in $work, and $pids (background
# servers) killed with it on exit.
#   source bench/lib.sh; bench_scratch NAME
bench_scratch() {
  work=$(mktemp -d "/tmp/kiln-$1-XXXXXX")
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}
