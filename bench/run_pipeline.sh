#!/usr/bin/env bash
# The asset pipeline's LOD chain against its peers, side by side in one run: Kiln's chain
# (kiln-pipeline-bench chain: one import, one weld, one cache-optimised index buffer, every
# level simplified from it), Debian's gltfpack (meshoptimizer's own tool, run once per
# level: `-si RATIO` with its default quantization, as Kiln quantizes levels past 0) and
# npm @gltf-transform/cli (`simplify --ratio R --error 1`, once per level), at the triangle
# counts of Kiln's levels, on the same GLB input (Kiln's level 0 of each model). Every output's deviation from the input is measured with one
# ruler (kiln-pipeline-bench error: the two-sided Hausdorff distance at vertices). Models:
# a generated 2-million-triangle height field and models of Debian's assimp-testmodels.
# Prints one JSON line per (model, tool, level) and per (model, tool) total.
#   bash bench/run_pipeline.sh [GRID_SIDE]     (default 1000: 2 * 1000 * 1000 triangles)
set -euo pipefail
cd "$(dirname "$0")/.."
side=${1:-1000}
source bench/lib.sh
bench_scratch pipeline-bench

bash scripts/setup.sh --test >/dev/null
cmake --preset release >/dev/null
cmake --build --preset release --target kiln kiln-pipeline-bench >/dev/null
kiln=$PWD/build/release/src/app/kiln
bench=$PWD/build/release/bench/kiln-pipeline-bench
npm_dir=$PWD/build/release/test-npm
bash tests/servers/npm.sh "$npm_dir" >/dev/null
gltf_transform="node $npm_dir/node_modules/@gltf-transform/cli/bin/cli.js"

# The generated model: a height field (a rough terrain: something to lose at every level).
/usr/bin/python3 - "$side" > "$work/terrain.obj" <<'EOF'
import math, sys
n = int(sys.argv[1])
out = sys.stdout
for y in range(n + 1):
    out.write("".join(f"v {x} {y} {math.sin(x * 0.05) * math.cos(y * 0.07) * 8 + ((x * 7919 + y * 104729) % 97) / 97.0:.4f}\n"
                      for x in range(n + 1)))
for y in range(n):
    row = []
    for x in range(n):
        a = y * (n + 1) + x + 1
        b = a + n + 1
        row.append(f"f {a} {b} {a + 1}\nf {a + 1} {b} {b + 1}\n")
    out.write("".join(row))
EOF

models=("$work/terrain.obj" /usr/share/assimp/models/FBX/spider.fbx
        /usr/share/assimp/models/Collada/duck.dae /usr/share/assimp/models/PLY/Wuson.ply)
now_ms() { date +%s%3N; }
for src in "${models[@]}"; do
  name=$(basename "$src")
  # The common input: Kiln's level 0 (welded, in GLB), so that every tool reads one file.
  "$kiln" convert "$src" --out "$work/$name.base" --lod-max-levels 1 >/dev/null
  base="$work/$name.base/lod0.glb"
  base_tris=$("$bench" chain "$base" --levels 1 | head -1 | jq .triangles)
  # Kiln: the whole chain in one process, per-level times from the chain itself.
  t0=$(now_ms)
  "$bench" chain "$base" --levels 6 --min 500 > "$work/$name.kiln.jsonl"
  kiln_ms=$(( $(now_ms) - t0 ))
  mapfile -t targets < <(jq -r 'select(.level != null and .level > 0) | .triangles' "$work/$name.kiln.jsonl")
  level=0
  gp_total=0
  gt_total=0
  while read -r line; do
    [[ $(jq -r '.level // empty' <<<"$line") == "" ]] && continue
    level=$(jq .level <<<"$line")
    [[ $level == 0 ]] && continue
    tris=$(jq .triangles <<<"$line")
    ratio=$(/usr/bin/python3 -c "print(f'{$tris / $base_tris:.6f}')")
    # Kiln's level, written by kiln convert for the error measurement (the same chain).
    if [[ ! -d "$work/$name.kiln" ]]; then
      "$kiln" convert "$base" --out "$work/$name.kiln" --lod-max-levels 6 --lod-min-triangles 500 >/dev/null
    fi
    kiln_err=$("$bench" error "$base" "$work/$name.kiln/lod$level.glb" | jq .hausdorff)
    echo "{\"model\":\"$name\",\"tool\":\"kiln\",\"level\":$level,\"triangles\":$tris,\"ms\":$(jq .ms <<<"$line"),\"bytes\":$(jq .bytes <<<"$line"),\"hausdorff\":$kiln_err}"
    t0=$(now_ms)
    gltfpack -i "$base" -o "$work/$name.gp$level.glb" -si "$ratio" >/dev/null 2>&1
    ms=$(( $(now_ms) - t0 ))
    gp_total=$(( gp_total + ms ))
    m=$("$bench" error "$base" "$work/$name.gp$level.glb")
    echo "{\"model\":\"$name\",\"tool\":\"gltfpack\",\"level\":$level,\"triangles\":$(jq .triangles <<<"$m"),\"ms\":$ms,\"bytes\":$(stat -c %s "$work/$name.gp$level.glb"),\"hausdorff\":$(jq .hausdorff <<<"$m")}"
    t0=$(now_ms)
    $gltf_transform simplify "$base" "$work/$name.gt$level.glb" --ratio "$ratio" --error 1 >/dev/null 2>&1
    ms=$(( $(now_ms) - t0 ))
    gt_total=$(( gt_total + ms ))
    m=$("$bench" error "$base" "$work/$name.gt$level.glb")
    echo "{\"model\":\"$name\",\"tool\":\"gltf-transform\",\"level\":$level,\"triangles\":$(jq .triangles <<<"$m"),\"ms\":$ms,\"bytes\":$(stat -c %s "$work/$name.gt$level.glb"),\"hausdorff\":$(jq .hausdorff <<<"$m")}"
  done < "$work/$name.kiln.jsonl"
  echo "{\"model\":\"$name\",\"triangles\":$base_tris,\"levels\":$level,\"kiln_chain_ms\":$kiln_ms,\"kiln_in_process\":$(tail -1 "$work/$name.kiln.jsonl"),\"gltfpack_ms\":$gp_total,\"gltf_transform_ms\":$gt_total}"
done
