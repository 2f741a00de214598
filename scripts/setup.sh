#!/usr/bin/env bash
# Installs the Debian packages listed in scripts/packages.txt (to build and run Kiln) that
# are not installed yet; with --test also those of scripts/packages-test.txt (what the tests
# and benchmarks start and drive). Idempotent: when everything is present it asks dpkg only
# and finishes in about a second.
#   bash scripts/setup.sh [--test]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lists=("$here/packages.txt")
[[ "${1:-}" == "--test" ]] && lists+=("$here/packages-test.txt")

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "${lists[@]}" | grep -v '^$')
missing=()
for p in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#wanted[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing packages: ${missing[*]}" >&2
  echo "setup: run as root (or install them with apt-get) and try again" >&2
  exit 1
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
