// How far one mesh lies from another: the distance from points to a mesh's surface, its
// triangles in a uniform grid searched in shells of cells outwards (the closest point of a
// triangle after Ericson, Real-Time Collision Detection, 5.1.5). The LOD chain measures each
// level's deviation with it; kiln-pipeline-bench's `error` is the same ruler for every tool.
#pragma once

#include "assets/pipeline/model.hpp"

#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace kiln::assets::pipeline {

class Surface {
 public:
  explicit Surface(std::span<const Primitive> primitives);
  // The distance from p to the nearest triangle (model units); infinity without triangles.
  // Searches shells of cells within the grid (O(r^2) cells each); `budget`, when given, is
  // how much more work may be done (one unit per cell looked at and per triangle tested),
  // decremented: once spent, the distance returned is a lower bound (what the search had
  // ruled out).
  double distance(const std::array<double, 3>& p, std::uint64_t* budget = nullptr) const;
  // Entries of the grid (a triangle in each cell its bounds touch): at most
  // kMaxEntriesPerTriangle per triangle plus 4,096, whatever the triangles' sizes.
  [[nodiscard]] std::size_t grid_entries() const { return tri_of_.size(); }
  static constexpr std::size_t kMaxEntriesPerTriangle = 8;

 private:
  long cell_of(double v, int axis) const;
  std::vector<std::array<std::array<double, 3>, 3>> tris_;
  std::array<double, 3> lo_{};
  double cell_ = 1;
  std::array<long, 3> gmin_{}, gmax_{};  // the grid's cell range per axis
  // The grid, flat: the occupied cells' keys in order, and for cell i its triangles
  // tri_of_[start_[i]..start_[i + 1]).
  std::vector<std::uint64_t> keys_;
  std::vector<std::uint32_t> start_;
  std::vector<std::uint32_t> tri_of_;
};

// The largest distance from the vertices of `from` to `to`: every vertex, or with
// `max_samples` > 0 at most that many spread evenly over them (then a lower bound). With
// `max_work` > 0 at most that much work is done in all (Surface::distance's units: hostile
// geometry, samples far from every triangle or thousands of triangles stacked in a cell,
// cannot make it slow); then too a lower bound.
double deviation(std::span<const Primitive> from, const Surface& to, std::size_t max_samples,
                 std::uint64_t max_work = 0);

}  // namespace kiln::assets::pipeline
