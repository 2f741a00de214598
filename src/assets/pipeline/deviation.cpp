#include "assets/pipeline/deviation.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>

namespace kiln::assets::pipeline {
namespace {

using V3 = std::array<double, 3>;

V3 sub(const V3& a, const V3& b) {
  return {a[0] - b[0], a[1] - b[1], a[2] - b[2]};
}
double dot(const V3& a, const V3& b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

// The closest point of triangle abc to p (Ericson, Real-Time Collision Detection, 5.1.5),
// as its squared distance.
double dist2_point_triangle(const V3& p, const V3& a, const V3& b, const V3& c) {
  const V3 ab = sub(b, a), ac = sub(c, a), ap = sub(p, a);
  const double d1 = dot(ab, ap), d2 = dot(ac, ap);
  auto d2to = [&](const V3& q) {
    const V3 d = sub(p, q);
    return dot(d, d);
  };
  if (d1 <= 0 && d2 <= 0) return d2to(a);
  const V3 bp = sub(p, b);
  const double d3 = dot(ab, bp), d4 = dot(ac, bp);
  if (d3 >= 0 && d4 <= d3) return d2to(b);
  const double vc = d1 * d4 - d3 * d2;
  if (vc <= 0 && d1 >= 0 && d3 <= 0) {
    const double v = d1 / (d1 - d3);
    return d2to({a[0] + v * ab[0], a[1] + v * ab[1], a[2] + v * ab[2]});
  }
  const V3 cp = sub(p, c);
  const double d5 = dot(ab, cp), d6 = dot(ac, cp);
  if (d6 >= 0 && d5 <= d6) return d2to(c);
  const double vb = d5 * d2 - d1 * d6;
  if (vb <= 0 && d2 >= 0 && d6 <= 0) {
    const double w = d2 / (d2 - d6);
    return d2to({a[0] + w * ac[0], a[1] + w * ac[1], a[2] + w * ac[2]});
  }
  const double va = d3 * d6 - d5 * d4;
  if (va <= 0 && (d4 - d3) >= 0 && (d5 - d6) >= 0) {
    const double w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
    return d2to({b[0] + w * (c[0] - b[0]), b[1] + w * (c[1] - b[1]), b[2] + w * (c[2] - b[2])});
  }
  const double denom = 1 / (va + vb + vc);
  const double v = vb * denom, w = vc * denom;
  return d2to(
      {a[0] + ab[0] * v + ac[0] * w, a[1] + ab[1] * v + ac[1] * w, a[2] + ab[2] * v + ac[2] * w});
}

std::uint64_t key(long x, long y, long z) {
  return (std::uint64_t(x & 0x1fffff) << 42) | (std::uint64_t(y & 0x1fffff) << 21) |
         std::uint64_t(z & 0x1fffff);
}

}  // namespace

Surface::Surface(std::span<const Primitive> primitives) {
  V3 lo{INFINITY, INFINITY, INFINITY}, hi{-INFINITY, -INFINITY, -INFINITY};
  for (const auto& p : primitives) {
    for (std::size_t i = 0; i + 2 < p.indices.size(); i += 3) {
      std::array<V3, 3> t;
      for (int k = 0; k < 3; ++k) {
        const auto v = p.indices[i + k];
        t[k] = {p.positions[v * 3], p.positions[v * 3 + 1], p.positions[v * 3 + 2]};
      }
      tris_.push_back(t);
    }
    for (std::size_t v = 0; v + 2 < p.positions.size(); v += 3)
      for (int a = 0; a < 3; ++a) {
        lo[a] = std::min(lo[a], double(p.positions[v + a]));
        hi[a] = std::max(hi[a], double(p.positions[v + a]));
      }
  }
  if (tris_.empty()) return;
  double extent = 0;
  for (int a = 0; a < 3; ++a) {
    lo_[a] = lo[a];
    extent = std::max(extent, hi[a] - lo[a]);
  }
  // About sixteen triangles per cell along a surface (4 x extent / sqrt(triangles)): most
  // triangles then fall in one or two cells, so the grid is quick to build; a query tests
  // a few hundred triangles. Large triangles among small ones would each fill many cells:
  // the cells are made larger until the grid holds at most kMaxEntriesPerTriangle entries
  // per triangle (memory and build time linear in the triangles whatever their shapes).
  cell_ = std::max(4 * extent / std::max(1.0, std::sqrt(double(tris_.size()))), 1e-9);
  const auto span_of = [this](std::uint32_t i) {
    std::array<long, 3> mn, mx;
    for (int a = 0; a < 3; ++a) {
      const double lo = std::min({tris_[i][0][a], tris_[i][1][a], tris_[i][2][a]});
      const double hi = std::max({tris_[i][0][a], tris_[i][1][a], tris_[i][2][a]});
      mn[a] = cell_of(lo, a);
      mx[a] = cell_of(hi, a);
    }
    return std::pair{mn, mx};
  };
  const double max_entries = double(kMaxEntriesPerTriangle) * double(tris_.size()) + 4096;
  for (;;) {
    double count = 0;
    for (std::uint32_t i = 0; i < tris_.size() && count <= max_entries; ++i) {
      const auto [mn, mx] = span_of(i);
      count += double(mx[0] - mn[0] + 1) * double(mx[1] - mn[1] + 1) * double(mx[2] - mn[2] + 1);
    }
    if (count <= max_entries) break;
    cell_ *= 2;
  }
  std::vector<std::pair<std::uint64_t, std::uint32_t>> entries;  // (cell, triangle)
  entries.reserve(tris_.size() * 2);
  for (std::uint32_t i = 0; i < tris_.size(); ++i) {
    const auto [mn, mx] = span_of(i);
    for (long x = mn[0]; x <= mx[0]; ++x)
      for (long y = mn[1]; y <= mx[1]; ++y)
        for (long z = mn[2]; z <= mx[2]; ++z) entries.emplace_back(key(x, y, z), i);
  }
  std::sort(entries.begin(), entries.end());
  for (int a = 0; a < 3; ++a) {
    gmin_[a] = cell_of(lo[a], a);
    gmax_[a] = cell_of(hi[a], a);
  }
  tri_of_.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (i == 0 || entries[i].first != entries[i - 1].first) {
      keys_.push_back(entries[i].first);
      start_.push_back(static_cast<std::uint32_t>(i));
    }
    tri_of_.push_back(entries[i].second);
  }
  start_.push_back(static_cast<std::uint32_t>(entries.size()));
}

long Surface::cell_of(double v, int axis) const {
  return static_cast<long>(std::floor((v - lo_[axis]) / cell_));
}

double Surface::distance(const V3& p, std::uint64_t* budget) const {
  if (tris_.empty()) return INFINITY;
  const std::array<long, 3> c{cell_of(p[0], 0), cell_of(p[1], 1), cell_of(p[2], 2)};
  // Shells closer than the grid hold nothing: start at the first that reaches it.
  long r = 0;
  for (int a = 0; a < 3; ++a) r = std::max({r, gmin_[a] - c[a], c[a] - gmax_[a]});
  // What is outside the cube of cells [c - r, c + r] is at least as far from p as the
  // cube's nearest face.
  const auto wall_of = [&](long r) {
    double wall = INFINITY;
    for (int a = 0; a < 3; ++a) {
      const double low = lo_[a] + double(c[a] - r) * cell_,
                   high = lo_[a] + double(c[a] + r + 1) * cell_;
      wall = std::min({wall, p[a] - low, high - p[a]});
    }
    return std::max(wall, 0.0);
  };
  double best = INFINITY;
  double searched = r > 0 ? wall_of(r - 1) : 0.0;  // nothing nearer than this is unseen
  bool spent = false;
  for (;; ++r) {
    // The shell's cells (the surface of the cube [c - r, c + r]) that lie in the grid.
    std::array<long, 3> lo, hi;
    bool covers = true;
    for (int a = 0; a < 3; ++a) {
      lo[a] = std::max(c[a] - r, gmin_[a]);
      hi[a] = std::min(c[a] + r, gmax_[a]);
      covers = covers && c[a] - r <= gmin_[a] && c[a] + r >= gmax_[a];
    }
    // One unit of budget per cell looked at and per triangle tested: coincident or
    // stacked geometry puts thousands of triangles in a cell.
    const auto take = [&] {
      if (budget == nullptr) return true;
      if (*budget == 0) {
        spent = true;
        return false;
      }
      --*budget;
      return true;
    };
    const auto visit = [&](long x, long y, long z) {
      if (!take()) return;
      const auto k = key(x, y, z);
      const auto it = std::lower_bound(keys_.begin(), keys_.end(), k);
      if (it == keys_.end() || *it != k) return;
      const auto i0 = static_cast<std::size_t>(it - keys_.begin());
      for (auto i = start_[i0]; i < start_[i0 + 1] && take(); ++i) {
        const auto& t = tris_[tri_of_[i]];
        best = std::min(best, dist2_point_triangle(p, t[0], t[1], t[2]));
      }
    };
    for (long x = lo[0]; x <= hi[0] && !spent; ++x)
      for (long y = lo[1]; y <= hi[1] && !spent; ++y) {
        if (std::labs(x - c[0]) == r || std::labs(y - c[1]) == r) {
          for (long z = lo[2]; z <= hi[2]; ++z) visit(x, y, z);
        } else {
          if (c[2] - r >= gmin_[2]) visit(x, y, c[2] - r);
          if (r > 0 && c[2] + r <= gmax_[2]) visit(x, y, c[2] + r);
        }
      }
    // Out of budget within this shell: what the shells before it ruled out, or a triangle
    // found nearer, is a lower bound (the nearest triangle is either among those tested or
    // outside the shells searched whole).
    if (spent) return std::min(std::sqrt(best), searched);
    searched = wall_of(r);
    if (covers || (best < INFINITY && std::sqrt(best) <= searched)) break;
  }
  return std::sqrt(best);
}

double deviation(std::span<const Primitive> from, const Surface& to, std::size_t max_samples,
                 std::uint64_t max_work) {
  std::size_t total = 0;
  for (const auto& p : from) total += p.vertex_count();
  const std::size_t stride =
      max_samples == 0 || total <= max_samples ? 1 : (total + max_samples - 1) / max_samples;
  double worst = 0;
  std::uint64_t budget = max_work;
  std::size_t n = 0;
  for (const auto& p : from)
    for (std::size_t v = 0; v + 2 < p.positions.size(); v += 3, ++n) {
      if (n % stride != 0) continue;
      if (max_work != 0 && budget == 0) return worst;
      worst = std::max(worst, to.distance({p.positions[v], p.positions[v + 1], p.positions[v + 2]},
                                          max_work != 0 ? &budget : nullptr));
    }
  return worst;
}

}  // namespace kiln::assets::pipeline
