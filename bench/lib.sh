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

# banner_port FILE: the port in the "is running at http://HOST:PORT/" line a Kiln server
# printed (the banner's other lines name more addresses); empty until it is there.
banner_port() {
  grep -oE 'running at http://[0-9.]+:[0-9]+' "$1" 2>/dev/null | grep -oE '[0-9]+$' | head -1
}
