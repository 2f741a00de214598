// The asset pipeline's glTF importer (tinygltf, then Kiln's accessor, index and hierarchy
// checks) on arbitrary bytes. What imports must pass validate(), survive the LOD chain and
// the GLB writer, and the written level 0 must import back with the same triangle count;
// each image it holds goes through the texture decoders (texture.hpp), whose refusals say
// why.
// assimp's formats are not fuzzed here: Debian's assimp hangs within seconds on mutated PLY
// files (tests/e2e/test_pipeline.py keeps one: the child process's CPU limit ends it), and
// its faults are what the child process (isolate.hpp) contains, not Kiln's to fix.
#include "assets/pipeline/glb.hpp"
#include "assets/pipeline/import.hpp"
#include "assets/pipeline/lod_chain.hpp"
#include "assets/pipeline/texture.hpp"

#include <cstdlib>

namespace pl = kiln::assets::pipeline;

namespace {

void check(const pl::Result<pl::Model>& m, const pl::Limits& limits) {
  if (!m) {
    if (m.error().detail.empty()) std::abort();  // every refusal says why
    return;
  }
  if (!pl::validate(*m, limits)) std::abort();  // importers hand on checked models only
  pl::LodOptions o;
  o.max_levels = 3;
  o.min_triangles = 1;
  // A quarter of the default: the instrumented build is ~10x slower than a release one and
  // an input has 10 s (fuzz/corpus/model/stacked-instances.gltf spends the whole budget).
  o.measure_budget = pl::LodOptions{}.measure_budget / 4;
  const auto levels = pl::build_lod_chain(*m, o);
  if (levels.empty() || levels[0].triangles != m->triangle_count()) std::abort();
  const auto glb = pl::write_glb({levels[0].primitives, m->materials, m->images});
  const auto back = pl::import_gltf(glb, limits);
  if (!back || back->triangle_count() != levels[0].triangles) std::abort();
  for (const auto& img : m->images) {
    if (std::uint64_t{img.width} * img.height > 256 * 256) continue;
    const auto t = pl::texture_levels(img, {64, 16, 50});
    if (!t ? t.error().detail.empty() : t->empty()) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  pl::Limits limits;
  limits.max_triangles = 100'000;
  limits.max_vertices = 100'000;
  limits.max_texture_pixels = 1024 * 1024;
  check(pl::import_gltf({data, size}, limits), limits);
  return 0;
}
