// LOD selection: which level of each entity's asset to show and in what order to download,
// from the camera, the viewport and a memory budget. Pure and synchronous (no I/O, no
// allocation beyond the result and a scratch it keeps), the same rule the TypeScript SDK
// mirrors (fixtures in tests/fixtures/lod_selection/).
//
// The rule is Cesium 3D Tiles' screen-space error (3D Tiles 1.1, "Geometric error"):
//
//   sse(level) = geometric_error * viewport_height / (distance * 2 * tan(fovy / 2))    [px]
//
// where `distance` is from the camera to the nearest point of the entity's bounding
// sphere (at least `near`, so a camera inside the sphere asks for the finest level).
// An entity shows the coarsest level whose sse is at most `max_screen_space_error`; the
// finest when none is. Levels come finest first, with non-decreasing geometric error.
//
// Hysteresis: an entity keeps the level it has loaded (`loaded`) while that level's sse
// stays within [max * (1 - h), max * (1 + h)]; it refines only when the loaded level's
// error exceeds max * (1 + h), and coarsens only to a level whose error is at most
// max * (1 - h). A camera moving back and forth across one threshold does not flip levels.
//
// Memory budget: the bytes of the selected levels (every entity's, loaded or not) stay
// within `memory_budget_bytes` when the coarsest levels allow it. Every entity first gets
// its coarsest level; what the budget has left refines entities in order of the screen
// error their coarsest level would show, largest first (what is near and large first).
// When even the coarsest levels exceed the budget, the entities of least error get no
// level (-1): nothing of theirs is shown or downloaded.
//
// Entities outside the view (the bounding sphere entirely outside the cone around the view
// direction that holds the viewport) get their coarsest level (so turning the camera shows
// something at once) and download after every entity in view.
//
// Download order: the entities whose selected level is not the loaded one; in view before
// out of view, and within each, entities showing nothing before entities showing a level;
// then by the screen error of what they show now (the loaded level's, or the coarsest's
// when nothing is loaded), largest first; ties by index. Priorities compare screen errors
// rounded to 32-bit floats (Math.fround in the TypeScript mirror), which sorts 100,000
// entities in three radix passes.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kiln::assets::lod {

struct Vec3 {
  double x = 0, y = 0, z = 0;
};

// A world-space bounding sphere (model units after the entity's transform).
struct Sphere {
  Vec3 center;
  double radius = 0;
};

struct Camera {
  Vec3 position;
  Vec3 direction{0, 0, -1};          // where it looks; need not be unit length; zero: no culling
  double fovy = 1.0471975511965976;  // vertical field of view, radians (60 degrees)
  double viewport_width = 1920;      // px
  double viewport_height = 1080;     // px
  double near = 0.1;                 // model units: the least distance the rule uses
};

// One level of an asset as the manifest describes it.
struct Level {
  double geometric_error = 0;  // model units (world units once scaled by the entity)
  std::uint64_t bytes = 0;     // what downloading it costs (and it holds in memory)
};

struct Entity {
  Sphere bounds;                  // world space
  double scale = 1;               // multiplies the levels' geometric error (the entity's
                                  // largest scale factor)
  std::span<const Level> levels;  // finest first; empty: the entity is skipped (-1)
  int loaded = -1;                // the level the client holds now, -1 none
};

struct Options {
  double max_screen_space_error = 16;                // px (Cesium's default)
  double hysteresis = 0.2;                           // fraction of the threshold, [0, 1)
  std::uint64_t memory_budget_bytes = 512ull << 20;  // Cesium's default, 512 MiB
};

struct Selection {
  std::vector<int> level;            // per entity: the index into its levels, -1 none
  std::vector<std::uint32_t> order;  // entity indices to download, first first
  std::uint64_t bytes = 0;           // the selected levels' bytes
  bool over_budget = false;          // the budget made some entity coarser than its error asks
};

// Screen-space error in px of `geometric_error` (world units) seen at `distance`.
double screen_space_error(const Camera& camera, double geometric_error, double distance);

// A reusable selector: its scratch buffers are kept between calls, so selecting every
// frame allocates nothing once warm (the result's vectors are reused through `out`).
class Selector {
 public:
  void select(const Camera& camera, std::span<const Entity> entities, const Options& options,
              Selection& out);

 private:
  struct Rank {
    float px;  // larger first (within a tier), compared as 32-bit floats
    std::uint32_t index;
    std::uint8_t tier;  // smaller first
  };
  void sort_ranks();
  std::vector<Rank> ranks_, scratch_;
  std::vector<std::uint32_t> counts_;
  std::vector<double> distance_;  // to the sphere's nearest point, at least near
  std::vector<std::uint8_t> in_view_;
};

// One-shot convenience over Selector.
Selection select(const Camera& camera, std::span<const Entity> entities,
                 const Options& options = {});

}  // namespace kiln::assets::lod
