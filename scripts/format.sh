#!/usr/bin/env bash
# Formats every C++ file the clang-format check of scripts/test.sh looks at.
set -euo pipefail
cd "$(dirname "$0")/.."
find src tests bench fuzz -name '*.cpp' -o -name '*.hpp' | xargs clang-format -i
