#!/usr/bin/env bash
# Installs what is missing, builds the release binary and the web editor, and runs
# `kiln serve` on embedded defaults: 127.0.0.1:7700 (the editor at /), data under
# ./kiln-data. Arguments go to `kiln serve`, e.g.
#   bash scripts/serve.sh --http-listen 0.0.0.0:7700
#   bash scripts/serve.sh --auth-dev-tokens true   # the editor's sign-in without a token (development)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target kiln
# `kiln` in a second shell (kiln token, kiln upload, kiln config show): linked where root can.
if [[ $(id -u) == 0 ]]; then
  ln -sf "$PWD/build/release/src/app/kiln" /usr/local/bin/kiln
else
  echo "kiln: not root, so not linked into /usr/local/bin: use $PWD/build/release/src/app/kiln" >&2
fi
bash scripts/build-editor.sh
exec build/release/src/app/kiln serve --http-editor-dir "$PWD/web/editor/dist" "$@"
