#include "assets/pipeline/lod_chain.hpp"

#include "assets/pipeline/deviation.hpp"

#include <meshoptimizer.h>

#include <algorithm>
#include <cmath>

namespace kiln::assets::pipeline {
namespace {

// A primitive after the shared work: welded vertices and one vertex-cache-optimised index
// buffer, plus meshoptimizer's scale for turning relative errors into model units.
struct Prepared {
  Primitive base;
  float scale = 0;
};

Prepared prepare(const Primitive& in) {
  const std::size_t n = in.vertex_count();
  std::vector<meshopt_Stream> streams{{in.positions.data(), 12, 12}};
  if (!in.normals.empty()) streams.push_back({in.normals.data(), 12, 12});
  if (!in.uvs.empty()) streams.push_back({in.uvs.data(), 8, 8});
  std::vector<unsigned> remap(n);
  const std::size_t unique = meshopt_generateVertexRemapMulti(
      remap.data(), in.indices.data(), in.indices.size(), n, streams.data(), streams.size());
  Prepared p;
  p.base.material = in.material;
  p.base.positions.resize(unique * 3);
  meshopt_remapVertexBuffer(p.base.positions.data(), in.positions.data(), n, 12, remap.data());
  if (!in.normals.empty()) {
    p.base.normals.resize(unique * 3);
    meshopt_remapVertexBuffer(p.base.normals.data(), in.normals.data(), n, 12, remap.data());
  }
  if (!in.uvs.empty()) {
    p.base.uvs.resize(unique * 2);
    meshopt_remapVertexBuffer(p.base.uvs.data(), in.uvs.data(), n, 8, remap.data());
  }
  p.base.indices.resize(in.indices.size());
  meshopt_remapIndexBuffer(p.base.indices.data(), in.indices.data(), in.indices.size(),
                           remap.data());
  meshopt_optimizeVertexCache(p.base.indices.data(), p.base.indices.data(), p.base.indices.size(),
                              unique);
  p.scale = meshopt_simplifyScale(p.base.positions.data(), unique, 12);
  return p;
}

// A level's primitive from its indices into the prepared vertices: cache and overdraw
// order, then only the vertices it uses, in fetch order.
Primitive finish(const Prepared& p, std::vector<unsigned> indices) {
  const std::size_t n = p.base.vertex_count();
  meshopt_optimizeVertexCache(indices.data(), indices.data(), indices.size(), n);
  meshopt_optimizeOverdraw(indices.data(), indices.data(), indices.size(), p.base.positions.data(),
                           n, 12, 1.05f);
  std::vector<unsigned> remap(n);
  const std::size_t used =
      meshopt_optimizeVertexFetchRemap(remap.data(), indices.data(), indices.size(), n);
  Primitive out;
  out.material = p.base.material;
  out.positions.resize(used * 3);
  meshopt_remapVertexBuffer(out.positions.data(), p.base.positions.data(), n, 12, remap.data());
  if (!p.base.normals.empty()) {
    out.normals.resize(used * 3);
    meshopt_remapVertexBuffer(out.normals.data(), p.base.normals.data(), n, 12, remap.data());
  }
  if (!p.base.uvs.empty()) {
    out.uvs.resize(used * 2);
    meshopt_remapVertexBuffer(out.uvs.data(), p.base.uvs.data(), n, 8, remap.data());
  }
  out.indices.resize(indices.size());
  meshopt_remapIndexBuffer(out.indices.data(), indices.data(), indices.size(), remap.data());
  return out;
}

}  // namespace

void compute_bounds(std::span<const Primitive> primitives, Box& box, Sphere& sphere) {
  bool any = false;
  for (const auto& p : primitives)
    for (std::size_t i = 0; i + 2 < p.positions.size(); i += 3)
      for (int a = 0; a < 3; ++a) {
        const float v = p.positions[i + a];
        box.min[a] = any ? std::min(box.min[a], v) : v;
        box.max[a] = any ? std::max(box.max[a], v) : v;
        any = any || a == 2;
      }
  if (!any) {
    box = {};
    sphere = {};
    return;
  }
  for (int a = 0; a < 3; ++a) sphere.center[a] = (box.min[a] + box.max[a]) / 2;
  double r2 = 0;
  for (const auto& p : primitives)
    for (std::size_t i = 0; i + 2 < p.positions.size(); i += 3) {
      const double dx = p.positions[i] - sphere.center[0],
                   dy = p.positions[i + 1] - sphere.center[1],
                   dz = p.positions[i + 2] - sphere.center[2];
      r2 = std::max(r2, dx * dx + dy * dy + dz * dz);
    }
  // Rounded up so that float rounding never leaves a vertex outside.
  sphere.radius = std::nextafter(static_cast<float>(std::sqrt(r2)), INFINITY);
}

std::vector<Level> build_lod_chain(const Model& m, const LodOptions& options) {
  std::vector<Prepared> prepared;
  prepared.reserve(m.primitives.size());
  for (const auto& p : m.primitives) prepared.push_back(prepare(p));

  std::vector<Level> levels;
  Level full;
  for (const auto& p : prepared) {
    full.primitives.push_back(finish(p, p.base.indices));
    full.triangles += p.base.triangle_count();
  }
  compute_bounds(full.primitives, full.box, full.sphere);
  const std::uint64_t total = full.triangles;
  levels.push_back(std::move(full));
  if (options.on_level) options.on_level(0);

  const double ratio = std::clamp(options.ratio, 0.01, 0.95);
  double share = 1;
  std::vector<unsigned> scratch;
  // What each primitive's next level simplifies from: the full mesh, or (cascade) the
  // level before it.
  std::vector<std::vector<unsigned>> from(prepared.size());
  for (std::size_t i = 0; i < prepared.size(); ++i) from[i] = prepared[i].base.indices;
  for (int k = 1; k < options.max_levels; ++k) {
    share *= ratio;
    const double target_total = static_cast<double>(total) * share;
    if (target_total < static_cast<double>(std::max<std::uint64_t>(options.min_triangles, 1)))
      break;
    Level level;
    std::vector<std::vector<unsigned>> next(prepared.size());
    for (std::size_t pi = 0; pi < prepared.size(); ++pi) {
      const auto& p = prepared[pi];
      const auto& source = from[pi];
      const std::size_t count = source.size();
      const std::size_t target = std::max<std::size_t>(
          3, static_cast<std::size_t>(static_cast<double>(p.base.indices.size() / 3) * share) * 3);
      if (count == 0) continue;
      scratch.resize(count);
      float err = 0;
      std::size_t got =
          meshopt_simplify(scratch.data(), source.data(), count, p.base.positions.data(),
                           p.base.vertex_count(), 12, target, 1.0f, 0, &err);
      if (got > target + target / 2) {
        // Stuck on topology (borders, seams): the sloppy simplifier reaches the target.
        std::vector<unsigned> sloppy(count);
        float serr = 0;
        const std::size_t sgot =
            meshopt_simplifySloppy(sloppy.data(), source.data(), count, p.base.positions.data(),
                                   p.base.vertex_count(), 12, target, 1.0f, &serr);
        if (sgot > 0 && sgot < got) {
          scratch.swap(sloppy);
          got = sgot;
          err = serr;
        }
      }
      level.error = std::max(level.error, static_cast<double>(err) * p.scale);
      if (got == 0) continue;  // this part vanishes at this distance
      std::vector<unsigned> kept(scratch.begin(), scratch.begin() + got);
      level.primitives.push_back(finish(p, kept));
      level.triangles += got / 3;
      if (options.cascade) next[pi] = std::move(kept);
    }
    const Level& prev = levels.back();
    if (level.triangles == 0 || level.triangles * 10 > prev.triangles * 9) break;  // no progress
    const Surface surface(level.primitives);
    const double measured = deviation(levels.front().primitives, surface, options.error_samples,
                                      options.measure_budget);
    level.error = std::max({level.error, measured, prev.error});
    if (options.cascade) from = std::move(next);
    compute_bounds(level.primitives, level.box, level.sphere);
    levels.push_back(std::move(level));
    if (options.on_level) options.on_level(levels.size() - 1);
  }
  return levels;
}

}  // namespace kiln::assets::pipeline
