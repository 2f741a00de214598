#include "assets/scene_stream.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <variant>

namespace kiln::assets {
namespace {

namespace json = boost::json;

Matrix mul(const Matrix& a, const Matrix& b) {
  return multiply(a, b);
}

std::optional<std::vector<double>> numbers(const json::value* v, std::size_t n) {
  if (!v || !v->is_array() || v->as_array().size() != n) return std::nullopt;
  std::vector<double> out;
  for (const auto& x : v->as_array()) {
    if (!x.is_number()) return std::nullopt;
    const double d = x.to_number<double>();
    if (!std::isfinite(d)) return std::nullopt;
    out.push_back(d);
  }
  return out;
}

// The entity's local matrix (T * R * S), or why its props cannot make one.
std::variant<Matrix, std::string> local_of(const json::object& props) {
  std::array<double, 3> t{0, 0, 0}, s{1, 1, 1};
  std::array<double, 4> q{0, 0, 0, 1};
  if (const auto* p = props.if_contains("position")) {
    auto v = numbers(p, 3);
    if (!v) return std::string("props.position is not an array of 3 finite numbers");
    t = {(*v)[0], (*v)[1], (*v)[2]};
  }
  if (const auto* r = props.if_contains("rotation")) {
    auto v = numbers(r, 4);
    if (!v) return std::string("props.rotation is not an array of 4 finite numbers (x, y, z, w)");
    // Scaled by its largest component first: squares neither overflow nor underflow.
    double big = 0;
    for (double c : *v) big = std::max(big, std::fabs(c));
    if (big == 0) return std::string("props.rotation is not a rotation (zero quaternion)");
    double len = 0;
    for (double& c : *v) {
      c /= big;
      len += c * c;
    }
    len = std::sqrt(len);
    q = {(*v)[0] / len, (*v)[1] / len, (*v)[2] / len, (*v)[3] / len};
  }
  if (const auto* sc = props.if_contains("scale")) {
    if (sc->is_number() && std::isfinite(sc->to_number<double>())) {
      const double k = sc->to_number<double>();
      s = {k, k, k};
    } else if (auto v = numbers(sc, 3)) {
      s = {(*v)[0], (*v)[1], (*v)[2]};
    } else {
      return std::string("props.scale is neither a finite number nor an array of 3");
    }
  }
  const Matrix m = compose(t, q, s);
  return m;
}

double max_axis_scale(const Matrix& m) {
  double best = 0;
  for (int c = 0; c < 3; ++c)
    best = std::max(best, std::sqrt(m[c * 4] * m[c * 4] + m[c * 4 + 1] * m[c * 4 + 1] +
                                    m[c * 4 + 2] * m[c * 4 + 2]));
  return best;
}

}  // namespace

ScenePlacement place_entities(const json::object& snapshot) {
  ScenePlacement out;
  const auto* ents = snapshot.if_contains("entities");
  if (!ents || !ents->is_object()) return out;
  const auto& all = ents->as_object();
  // World matrices, or the reason an entity cannot be placed, memoised along the chains.
  std::map<std::string, std::variant<Matrix, std::string>, std::less<>> world;
  const auto resolve = [&](const std::string& start) -> const std::variant<Matrix, std::string>& {
    std::vector<std::string> chain;
    std::string cur = start;
    std::variant<Matrix, std::string> base = kIdentity;
    // Up to the root, or to an entity already resolved (the scene model forbids cycles;
    // the bound guards a snapshot that breaks it).
    while (cur != "root" && chain.size() <= all.size()) {
      if (auto it = world.find(cur); it != world.end()) {
        base = it->second;
        break;
      }
      const auto* e = all.if_contains(cur);
      if (!e || !e->is_object()) {
        base = std::string("its parent '" + cur + "' is missing");
        break;
      }
      chain.push_back(cur);
      const auto* parent = e->as_object().if_contains("parent");
      cur = parent && parent->is_string() ? std::string(parent->as_string()) : "root";
    }
    if (chain.size() > all.size()) base = std::string("its parents form a cycle");
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
      std::variant<Matrix, std::string> mine = base;
      if (std::holds_alternative<Matrix>(base)) {
        const auto* e = all.if_contains(*it);
        const auto* props = e->as_object().if_contains("props");
        const json::object empty;
        auto local = local_of(props && props->is_object() ? props->as_object() : empty);
        if (std::holds_alternative<std::string>(local))
          mine = *it == start ? std::get<std::string>(local)
                              : "its ancestor '" + *it + "': " + std::get<std::string>(local);
        else
          mine = mul(std::get<Matrix>(base), std::get<Matrix>(local));
      }
      base = world.emplace(*it, std::move(mine)).first->second;
    }
    return world.emplace(start, base).first->second;
  };
  for (const auto& [id, e] : all) {
    const auto* props = e.is_object() ? e.as_object().if_contains("props") : nullptr;
    const auto* asset =
        props && props->is_object() ? props->as_object().if_contains("asset") : nullptr;
    if (!asset) continue;
    const std::string eid(id);
    if (!asset->is_string() || asset->as_string().empty()) {
      out.skipped.push_back({eid, "props.asset is not an asset id"});
      continue;
    }
    const auto& w = resolve(eid);
    if (const auto* why = std::get_if<std::string>(&w)) {
      out.skipped.push_back({eid, *why});
      continue;
    }
    const Matrix& m = std::get<Matrix>(w);
    const double scale = max_axis_scale(m);
    if (!std::isfinite(scale) ||
        !std::all_of(m.begin(), m.end(), [](double x) { return std::isfinite(x); })) {
      out.skipped.push_back({eid, "its transform overflows (scales or positions too large)"});
      continue;
    }
    out.entities.push_back({eid, std::string(asset->as_string()), m, scale});
  }
  const auto by_id = [](const auto& a, const auto& b) { return a.id < b.id; };
  std::sort(out.entities.begin(), out.entities.end(), by_id);
  std::sort(out.skipped.begin(), out.skipped.end(), by_id);
  return out;
}

std::array<double, 4> world_sphere(const Matrix& w, double max_scale,
                                   const std::array<double, 3>& c, double radius) {
  return {w[0] * c[0] + w[4] * c[1] + w[8] * c[2] + w[12],
          w[1] * c[0] + w[5] * c[1] + w[9] * c[2] + w[13],
          w[2] * c[0] + w[6] * c[1] + w[10] * c[2] + w[14], radius * max_scale};
}

}  // namespace kiln::assets
