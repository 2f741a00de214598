#include "assets/pipeline/lod_selection.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace kiln::assets::lod {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The px per world unit of error at distance 1: viewport_height / (2 tan(fovy / 2)).
double pixels_per_unit(const Camera& c) {
  const double t = std::tan(c.fovy / 2);
  if (!(t > 0) || !std::isfinite(t) || !(c.viewport_height > 0)) return 0;
  return c.viewport_height / (2 * t);
}

// The largest index whose error (px) is at most `threshold`; 0 when none is. The threshold
// is turned into a geometric error once (threshold * distance / (scale * k)), so the scan
// compares, never divides.
int coarsest_within(std::span<const Level> levels, double scale, double k, double distance,
                    double threshold) {
  const double limit = threshold * distance / (scale * k);
  for (int j = static_cast<int>(levels.size()) - 1; j > 0; --j)
    if (levels[j].geometric_error <= limit) return j;
  return 0;
}

// Whether a sphere reaches into the cone (apex `p`, unit axis `dir`, half-angle with
// cos `ca` and sin `sa`). `v` is center - p, `len` its length, `r` the radius.
bool in_cone(const Vec3& v, double len, double r, const Vec3& dir, double ca, double sa) {
  if (len <= r) return true;
  const double along = v.x * dir.x + v.y * dir.y + v.z * dir.z;
  const double perp = std::sqrt(std::max(0.0, len * len - along * along));
  // The apex is the nearest point of the cone's surface: the sphere must hold it.
  if (along * ca + perp * sa < 0) return false;  // len > r here
  return perp * ca - along * sa <= r;
}

}  // namespace

// By (tier ascending, px descending, index ascending), the ranks being in index order: a
// stable LSD radix sort on px's IEEE bits (monotonic for non-negative floats; inverted for
// descending), 11 bits a pass (counts that stay in cache), then a stable pass on the tier. O(n): a
// frame of 100,000 entities sorts in about a millisecond, where a comparison sort takes several.
void Selector::sort_ranks() {
  const std::size_t n = ranks_.size();
  if (n < 2'048) {
    std::sort(ranks_.begin(), ranks_.end(), [](const Rank& a, const Rank& b) {
      if (a.tier != b.tier) return a.tier < b.tier;
      if (a.px != b.px) return a.px > b.px;
      return a.index < b.index;
    });
    return;
  }
  scratch_.resize(n);
  constexpr int kBits = 11;
  constexpr std::uint32_t kMask = (1u << kBits) - 1;
  counts_.resize(1u << kBits);
  const auto key = [](const Rank& r) {
    std::uint32_t bits;
    std::memcpy(&bits, &r.px, sizeof bits);
    return ~bits;
  };
  for (int shift = 0; shift < 32; shift += kBits) {
    std::fill(counts_.begin(), counts_.end(), 0u);
    for (const Rank& r : ranks_) ++counts_[(key(r) >> shift) & kMask];
    if (counts_[(key(ranks_[0]) >> shift) & kMask] == n) continue;  // one digit: nothing moves
    std::uint32_t sum = 0;
    for (auto& c : counts_) sum += std::exchange(c, sum);
    for (const Rank& r : ranks_) scratch_[counts_[(key(r) >> shift) & kMask]++] = r;
    ranks_.swap(scratch_);
  }
  std::array<std::uint32_t, 5> tiers{};
  for (const Rank& r : ranks_) ++tiers[r.tier + 1u];
  for (int t = 1; t < 5; ++t) tiers[t] += tiers[t - 1];
  for (const Rank& r : ranks_) scratch_[tiers[r.tier]++] = r;
  ranks_.swap(scratch_);
}

double screen_space_error(const Camera& camera, double geometric_error, double distance) {
  const double d = std::max(distance, camera.near > 0 ? camera.near : 1e-9);
  const double e = geometric_error * pixels_per_unit(camera) / d;
  return std::isfinite(e) ? e : 0;
}

void Selector::select(const Camera& camera, std::span<const Entity> entities,
                      const Options& options, Selection& out) {
  const std::size_t n = entities.size();
  out.level.assign(n, -1);
  out.order.clear();
  out.bytes = 0;
  out.over_budget = false;
  distance_.assign(n, kInf);
  in_view_.assign(n, 0);

  const double k = pixels_per_unit(camera);
  const double near = camera.near > 0 ? camera.near : 1e-9;
  const double max = options.max_screen_space_error;
  const double h = std::clamp(options.hysteresis, 0.0, 0.99);

  // The view cone: around the view direction, through the viewport's corners.
  const Vec3& d = camera.direction;
  const double dlen = std::sqrt(d.x * d.x + d.y * d.y + d.z * d.z);
  const bool cull = dlen > 0 && std::isfinite(dlen) && camera.viewport_height > 0;
  const Vec3 dir = cull ? Vec3{d.x / dlen, d.y / dlen, d.z / dlen} : Vec3{};
  const double aspect = cull ? camera.viewport_width / camera.viewport_height : 1;
  const double half = std::atan(std::tan(camera.fovy / 2) * std::sqrt(1 + aspect * aspect));
  const double ca = std::cos(half), sa = std::sin(half);

  std::uint64_t wanted = 0, base = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const Entity& e = entities[i];
    if (e.levels.empty()) continue;
    const int coarse = static_cast<int>(e.levels.size()) - 1;
    const Vec3 v{e.bounds.center.x - camera.position.x, e.bounds.center.y - camera.position.y,
                 e.bounds.center.z - camera.position.z};
    const double len = std::sqrt(v.x * v.x + v.y * v.y + v.z * v.z);
    const double r = std::max(0.0, e.bounds.radius);
    const double scale = std::isfinite(e.scale) && e.scale > 0 ? e.scale : 1;
    double dist = len - r;
    bool view = true;
    if (!std::isfinite(len) || !std::isfinite(r)) {
      dist = kInf;  // a broken transform: shown coarse, downloaded last
      view = false;
    } else if (cull) {
      view = in_cone(v, len, r, dir, ca, sa);
    }
    dist = std::max(dist, near);
    in_view_[i] = view ? 1 : 0;
    distance_[i] = dist;

    int pick = coarse;
    if (view) {
      const int loaded = e.loaded >= 0 && e.loaded <= coarse ? e.loaded : -1;
      if (loaded < 0) {
        pick = coarsest_within(e.levels, scale, k, dist, max);
      } else {
        const double now = e.levels[loaded].geometric_error * scale * k / dist;
        if (now > max * (1 + h))
          pick = coarsest_within(e.levels, scale, k, dist, max);
        else if (now >= max * (1 - h))
          pick = loaded;
        else
          pick = std::max(loaded, coarsest_within(e.levels, scale, k, dist, max * (1 - h)));
      }
    }
    out.level[i] = pick;
    wanted += e.levels[pick].bytes;
    base += e.levels[coarse].bytes;
  }

  const auto px_of = [&](std::size_t i, int level) {
    const Entity& e = entities[i];
    const double scale = std::isfinite(e.scale) && e.scale > 0 ? e.scale : 1;
    const double px = e.levels[level].geometric_error * scale * k / distance_[i];
    return std::isfinite(px) ? px : 0.0;
  };

  if (wanted > options.memory_budget_bytes) {
    out.over_budget = true;
    ranks_.clear();
    for (std::size_t i = 0; i < n; ++i) {
      const auto& levels = entities[i].levels;
      if (levels.empty()) continue;
      ranks_.push_back({static_cast<float>(px_of(i, static_cast<int>(levels.size()) - 1)),
                        static_cast<std::uint32_t>(i),
                        static_cast<std::uint8_t>(in_view_[i] ? 0 : 1)});
    }
    sort_ranks();
    if (base > options.memory_budget_bytes) {
      std::uint64_t used = 0;
      for (const Rank& rk : ranks_) {
        const Entity& e = entities[rk.index];
        const std::uint64_t b = e.levels.back().bytes;
        if (used + b <= options.memory_budget_bytes) {
          used += b;
          out.level[rk.index] = static_cast<int>(e.levels.size()) - 1;
        } else {
          out.level[rk.index] = -1;
        }
      }
    } else {
      std::uint64_t left = options.memory_budget_bytes - base;
      for (const Rank& rk : ranks_) {
        const Entity& e = entities[rk.index];
        const int coarse = static_cast<int>(e.levels.size()) - 1;
        const std::uint64_t cb = e.levels[coarse].bytes;
        int j = out.level[rk.index];
        // The finest level from the wanted one towards the coarsest that the rest pays for.
        while (j < coarse && e.levels[j].bytes > cb && e.levels[j].bytes - cb > left) ++j;
        if (e.levels[j].bytes > cb) left -= e.levels[j].bytes - cb;
        out.level[rk.index] = j;
      }
    }
  }

  // Download order. Tiers: in view showing nothing, in view showing a level, out of view
  // showing nothing, out of view showing a level; within a tier, the error of what the
  // entity shows now (its coarsest level's when nothing), largest first.
  ranks_.clear();
  for (std::size_t i = 0; i < n; ++i) {
    const int sel = out.level[i];
    if (sel < 0) continue;
    const Entity& e = entities[i];
    out.bytes += e.levels[sel].bytes;
    if (sel == e.loaded) continue;
    const int coarse = static_cast<int>(e.levels.size()) - 1;
    const bool has = e.loaded >= 0 && e.loaded <= coarse;
    const int tier = (in_view_[i] ? 0 : 2) + (has ? 1 : 0);
    ranks_.push_back({static_cast<float>(px_of(i, has ? e.loaded : coarse)),
                      static_cast<std::uint32_t>(i), static_cast<std::uint8_t>(tier)});
  }
  sort_ranks();
  out.order.reserve(ranks_.size());
  for (const Rank& rk : ranks_) out.order.push_back(rk.index);
}

Selection select(const Camera& camera, std::span<const Entity> entities, const Options& options) {
  Selection s;
  Selector().select(camera, entities, options, s);
  return s;
}

}  // namespace kiln::assets::lod
