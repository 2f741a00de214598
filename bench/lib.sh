# Sourced by the bench scripts: a scratch directory in $work, and $pids (background
# servers) killed with it on exit.
#   source bench/lib.sh; bench_scratch NAME
bench_scratch() {
  work=$(mktemp -d "/tmp/kiln-$1-XXXXXX")
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# seed_access PORT KEY_FILE CLIENTS ROOM_SIZE: kiln-bench's members and scenes through the
# REST API on PORT (the gateway decides joins from live membership, not from tokens).
seed_access() {
  python3 bench/seed_access.py --api "http://127.0.0.1:$1" --key-file "$2" --users "$3" \
    --rooms $(( ($3 + $4 - 1) / $4 ))
}
