#!/usr/bin/env bash
# Installs the npm packages of a package of this repository (sdk/ts, web/editor) in place,
# with `npm ci` from its package-lock.json; skips the install when node_modules was made
# from that exact lock file. Installs Debian's nodejs and npm when they are missing.
#   bash scripts/npm-ci.sh sdk/ts
set -euo pipefail
dir=$(cd "${1:?package directory}" && pwd)
if ! command -v npm >/dev/null; then
  echo "npm: installing Debian's nodejs and npm" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
stamp="$dir/node_modules/.kiln-lock"
if [[ -d "$dir/node_modules" ]] && cmp -s "$dir/package-lock.json" "$stamp"; then
  exit 0
fi
cd "$dir"
for attempt in 1 2 3; do
  if npm ci --no-audit --no-fund --loglevel=error; then
    cp package-lock.json "$stamp"
    exit 0
  fi
  echo "npm ci in $dir failed (attempt $attempt); retrying" >&2
  sleep $((attempt * 2))
done
exit 1
