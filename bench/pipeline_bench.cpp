// kiln-pipeline-bench: the asset pipeline's LOD chain timed in process, and the deviation of
// any simplified model from its original, measured the same way for every tool (so that
// Kiln, gltfpack and glTF-Transform are compared on one ruler). bench/run_pipeline.sh runs it.
//
//   kiln-pipeline-bench chain MODEL [--ratio 0.5] [--levels 6] [--min 500]
//     one JSON line per level: triangles, meshoptimizer's error bound, ms for the level
//     (level 0: the shared weld and cache optimisation plus its own optimisation; then each
//     level's simplification and optimisation), GLB bytes; then the totals
//   kiln-pipeline-bench error ORIGINAL SIMPLIFIED
//     one JSON line: the largest distance from a vertex of either model to the other's
//     surface (a two-sided Hausdorff distance sampled at vertices), in model units
#include "assets/pipeline/convert.hpp"
#include "assets/pipeline/glb.hpp"
#include "assets/pipeline/import.hpp"
#include "assets/pipeline/lod_chain.hpp"

#include <CLI/CLI.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <unordered_map>

namespace pl = kiln::assets::pipeline;

namespace {

using Clock = std::chrono::steady_clock;
using V3 = std::array<double, 3>;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

pl::Model load(const std::string& path) {
  pl::Limits limits;
  limits.max_triangles = limits.max_vertices = 100'000'000;
  auto m = pl::import_model(read_file(path), path, limits);
  if (!m) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), m.error().detail.c_str());
    std::exit(1);
  }
  return std::move(*m);
}

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

// A model's triangles in a uniform grid: the distance from a point to the surface by
// searching shells of cells outwards.
class Surface {
 public:
  explicit Surface(const pl::Model& m) {
    for (const auto& p : m.primitives)
      for (std::size_t i = 0; i + 2 < p.indices.size(); i += 3) {
        std::array<V3, 3> t;
        for (int k = 0; k < 3; ++k) {
          const auto v = p.indices[i + k];
          t[k] = {p.positions[v * 3], p.positions[v * 3 + 1], p.positions[v * 3 + 2]};
        }
        tris_.push_back(t);
      }
    const auto b = m.bounds();
    double extent = 0;
    for (int a = 0; a < 3; ++a) {
      lo_[a] = b.min[a];
      extent = std::max(extent, double(b.max[a] - b.min[a]));
    }
    // About one triangle per cell along a surface: extent / sqrt(triangles).
    cell_ = std::max(extent / std::max(1.0, std::sqrt(double(tris_.size()))), 1e-9);
    for (std::uint32_t i = 0; i < tris_.size(); ++i) {
      std::array<long, 3> mn, mx;
      for (int a = 0; a < 3; ++a) {
        const double lo = std::min({tris_[i][0][a], tris_[i][1][a], tris_[i][2][a]});
        const double hi = std::max({tris_[i][0][a], tris_[i][1][a], tris_[i][2][a]});
        mn[a] = cell_of(lo, a);
        mx[a] = cell_of(hi, a);
      }
      for (long x = mn[0]; x <= mx[0]; ++x)
        for (long y = mn[1]; y <= mx[1]; ++y)
          for (long z = mn[2]; z <= mx[2]; ++z) cells_[key(x, y, z)].push_back(i);
    }
  }

  double distance(const V3& p) const {
    const long cx = cell_of(p[0], 0), cy = cell_of(p[1], 1), cz = cell_of(p[2], 2);
    double best = INFINITY;
    for (long r = 0; r < 4096; ++r) {
      for (long x = cx - r; x <= cx + r; ++x)
        for (long y = cy - r; y <= cy + r; ++y)
          for (long z = cz - r; z <= cz + r; ++z) {
            if (std::max({std::labs(x - cx), std::labs(y - cy), std::labs(z - cz)}) != r) continue;
            const auto it = cells_.find(key(x, y, z));
            if (it == cells_.end()) continue;
            for (auto t : it->second)
              best = std::min(best, dist2_point_triangle(p, tris_[t][0], tris_[t][1], tris_[t][2]));
          }
      // Every cell beyond shell r is at least r cells away.
      if (best < INFINITY && std::sqrt(best) <= double(r) * cell_) break;
    }
    return std::sqrt(best);
  }

 private:
  long cell_of(double v, int axis) const {
    return static_cast<long>(std::floor((v - lo_[axis]) / cell_));
  }
  static std::uint64_t key(long x, long y, long z) {
    return (std::uint64_t(x & 0x1fffff) << 42) | (std::uint64_t(y & 0x1fffff) << 21) |
           std::uint64_t(z & 0x1fffff);
  }
  std::vector<std::array<V3, 3>> tris_;
  std::array<double, 3> lo_{};
  double cell_ = 1;
  std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> cells_;
};

double one_sided(const pl::Model& from, const Surface& to) {
  double worst = 0;
  for (const auto& p : from.primitives)
    for (std::size_t v = 0; v + 2 < p.positions.size(); v += 3)
      worst =
          std::max(worst, to.distance({p.positions[v], p.positions[v + 1], p.positions[v + 2]}));
  return worst;
}

int run_chain(const std::string& path, pl::LodOptions o) {
  const auto t0 = Clock::now();
  const pl::Model m = load(path);
  const double import_ms = ms_since(t0);
  const auto t1 = Clock::now();
  std::vector<double> level_ms;
  auto last = t1;
  o.on_level = [&](std::size_t) {
    level_ms.push_back(ms_since(last));
    last = Clock::now();
  };
  const auto levels = pl::build_lod_chain(m, o);
  const double chain_ms = ms_since(t1);
  const auto t2 = Clock::now();
  std::vector<std::size_t> bytes;
  for (std::size_t i = 0; i < levels.size(); ++i) {
    // As convert() writes it (quantized past level 0 where that keeps the error).
    pl::GlbInput glb{levels[i].primitives, m.materials, m.images};
    glb.quantize = pl::quantized(levels, i);
    glb.box = &levels.front().box;
    bytes.push_back(pl::write_glb(glb).size());
  }
  const double write_ms = ms_since(t2);
  for (std::size_t i = 0; i < levels.size(); ++i)
    std::cout << boost::json::serialize(boost::json::object{{"level", i},
                                                            {"triangles", levels[i].triangles},
                                                            {"error", levels[i].error},
                                                            {"ms", level_ms[i]},
                                                            {"bytes", bytes[i]}})
              << "\n";
  std::cout << boost::json::serialize(boost::json::object{{"total_ms", ms_since(t0)},
                                                          {"import_ms", import_ms},
                                                          {"chain_ms", chain_ms},
                                                          {"write_ms", write_ms},
                                                          {"levels", levels.size()}})
            << "\n";
  return 0;
}

int run_error(const std::string& original, const std::string& simplified) {
  const auto a = load(original), b = load(simplified);
  const Surface sa(a), sb(b);
  const double there = one_sided(a, sb), back = one_sided(b, sa);
  std::cout << boost::json::serialize(boost::json::object{{"triangles", b.triangle_count()},
                                                          {"original_to_simplified", there},
                                                          {"simplified_to_original", back},
                                                          {"hausdorff", std::max(there, back)}})
            << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"kiln-pipeline-bench: the LOD chain timed, and deviations measured"};
  app.require_subcommand(1);
  std::string model, original, simplified;
  pl::LodOptions o;
  o.max_levels = 6;
  auto* chain = app.add_subcommand("chain", "Time the LOD chain of MODEL");
  chain->add_option("model", model)->required()->check(CLI::ExistingFile);
  chain->add_option("--ratio", o.ratio);
  chain->add_option("--levels", o.max_levels);
  chain->add_option("--min", o.min_triangles);
  auto* err = app.add_subcommand("error", "The deviation of SIMPLIFIED from ORIGINAL");
  err->add_option("original", original)->required()->check(CLI::ExistingFile);
  err->add_option("simplified", simplified)->required()->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);
  if (chain->parsed()) return run_chain(model, o);
  return run_error(original, simplified);
}
