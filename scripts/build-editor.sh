#!/usr/bin/env bash
# Builds the web editor (web/editor, on the TypeScript SDK in sdk/ts) into web/editor/dist,
# the static files `kiln serve --http-editor-dir web/editor/dist` serves at /. Installs the
# npm packages both need (npm ci, skipped when up to date; Debian's nodejs and npm when
# missing). About 30 s the first time, 2 s after. --check also type-checks the editor
# against the SDK (tsc), as the test suite does.
#   bash scripts/build-editor.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/npm-ci.sh sdk/ts
bash scripts/npm-ci.sh web/editor
(cd web/editor && node scripts/build.mjs)
if [[ "${1:-}" == "--check" ]]; then
  (cd web/editor && npx --no-install tsc --noEmit -p tsconfig.json)
fi
