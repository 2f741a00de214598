#!/usr/bin/env bash
# Installs the npm packages the tests use (tests/npm/package.json, pinned by its lock file)
# into DIR, with `npm ci`. Skips the install when DIR already holds that exact lock file.
#   bash tests/servers/npm.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")/../npm" && pwd)
dir=${1:?directory}
if ! command -v npm >/dev/null; then
  echo "npm: installing Debian's nodejs and npm" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
mkdir -p "$dir"
if [[ -d "$dir/node_modules" ]] && cmp -s "$here/package-lock.json" "$dir/package-lock.json"; then
  exit 0
fi
cp "$here/package.json" "$here/package-lock.json" "$dir/"
cd "$dir"
for attempt in 1 2 3; do
  npm ci --no-audit --no-fund --loglevel=error && exit 0
  echo "npm ci failed (attempt $attempt); retrying" >&2
  sleep $((attempt * 2))
done
exit 1
