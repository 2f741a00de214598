// The LOD chain: levels of a model at decreasing triangle counts, with meshoptimizer
// (Debian's 0.18). Work shared across levels is done once: one vertex remap (identical
// vertices welded over position, normal and UV), one vertex-cache-optimised index buffer
// that every level simplifies from (each level from the full mesh, so errors do not
// accumulate level over level). Each level is then optimised for the vertex cache, for
// overdraw and for vertex fetch, and carries its own compacted vertices.
//
// A level's `error` is how far the original lies from the level, in model units, what 3D
// Tiles calls its geometric error: the larger of meshoptimizer's estimate (meshopt_simplify's
// result_error, relative to the mesh extent, times meshopt_simplifyScale: a distance to the
// planes of the collapsed triangles, which on rough surfaces is several times too small) and
// the largest distance measured from the original's vertices to the level's surface
// (deviation.hpp; up to `error_samples` of them, spread evenly). Errors are non-decreasing
// from level 0 (the original, error 0). When topology stops meshopt_simplify far above a
// level's target, meshopt_simplifySloppy is used for that primitive.
#pragma once

#include "assets/pipeline/model.hpp"

#include <array>
#include <functional>
#include <span>

namespace kiln::assets::pipeline {

struct LodOptions {
  double ratio = 0.5;                  // each level aims at this share of the previous one's
  std::uint64_t min_triangles = 500;   // the floor: no level aims below it
  int max_levels = 8;                  // level 0 included
  std::size_t error_samples = 65'536;  // original vertices measured per level; 0: every one
  // The work one level's measurement may do (deviation.hpp's units: a grid cell looked at or
  // a triangle tested). Real surfaces cost a sample up to a few hundred (27 cells of about
  // sixteen triangles: 65,536 samples, at most ~30M);
  // hostile geometry (samples far from every triangle, instances stacked on each other)
  // far more: it stops here, the measured error then a lower bound. 0: no limit.
  std::uint64_t measure_budget = 64'000'000;
  // Each level simplified from the level before it (cheaper: the input halves each level),
  // rather than from the full mesh; errors are measured against the original either way.
  bool cascade = false;
  // Called as each level is done (0 after the shared work and level 0): progress, timing.
  std::function<void(std::size_t level)> on_level;
};

struct Sphere {
  std::array<float, 3> center{0, 0, 0};
  float radius = 0;
};

struct Level {
  std::vector<Primitive> primitives;  // materials index the source model's
  std::uint64_t triangles = 0;
  double error = 0;  // model units
  Box box;
  Sphere sphere;  // around the box's center, holding every vertex
};

// Levels finest first; level 0 holds every triangle of `m` (validated: validate()).
std::vector<Level> build_lod_chain(const Model& m, const LodOptions& options);

// The box and the bounding sphere of the primitives' positions.
void compute_bounds(std::span<const Primitive> primitives, Box& box, Sphere& sphere);

}  // namespace kiln::assets::pipeline
