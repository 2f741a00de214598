#include "assets/pipeline/model.hpp"

#include "platform/utf8.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kiln::assets::pipeline {
namespace {
constexpr float kMaxCoordinate = 1e18f;
}  // namespace

const char* to_string(Errc c) {
  switch (c) {
    case Errc::unsupported:
      return "unsupported";
    case Errc::malformed:
      return "malformed";
    case Errc::too_large:
      return "too_large";
    case Errc::empty:
      return "empty";
    case Errc::limits:
      return "limits";
    case Errc::crashed:
      return "crashed";
    case Errc::internal:
      return "internal";
    case Errc::stopped:
      return "stopped";
  }
  return "internal";
}

std::uint64_t Model::triangle_count() const {
  std::uint64_t n = 0;
  for (const auto& p : primitives) n += p.triangle_count();
  return n;
}

std::uint64_t Model::vertex_count() const {
  std::uint64_t n = 0;
  for (const auto& p : primitives) n += p.vertex_count();
  return n;
}

Box Model::bounds() const {
  Box b;
  bool any = false;
  for (const auto& p : primitives) {
    for (std::size_t i = 0; i + 2 < p.positions.size(); i += 3) {
      for (int a = 0; a < 3; ++a) {
        const float v = p.positions[i + a];
        if (!any) {
          b.min[a] = b.max[a] = v;
        } else {
          b.min[a] = std::min(b.min[a], v);
          b.max[a] = std::max(b.max[a], v);
        }
      }
      any = true;
    }
  }
  return b;
}

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t start = i;
    if (utf8::decode(s, i)) {
      out.append(s.substr(start, i - start));
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

Result<void> validate(const Model& m, const Limits& limits) {
  if (m.triangle_count() > limits.max_triangles)
    return Error{Errc::too_large, "the model has " + std::to_string(m.triangle_count()) +
                                      " triangles; the limit is " +
                                      std::to_string(limits.max_triangles)};
  if (m.vertex_count() > limits.max_vertices)
    return Error{Errc::too_large, "the model has " + std::to_string(m.vertex_count()) +
                                      " vertices; the limit is " +
                                      std::to_string(limits.max_vertices)};
  if (m.images.size() > limits.max_textures)
    return Error{Errc::too_large, "the model has " + std::to_string(m.images.size()) +
                                      " images; the limit is " +
                                      std::to_string(limits.max_textures)};
  for (std::size_t pi = 0; pi < m.primitives.size(); ++pi) {
    const auto& p = m.primitives[pi];
    const std::string where = "primitive " + std::to_string(pi) + ": ";
    if (p.positions.size() % 3 != 0)
      return Error{Errc::malformed, where + "positions are not whole xyz triples"};
    const std::size_t n = p.vertex_count();
    if (!p.normals.empty() && p.normals.size() != n * 3)
      return Error{Errc::malformed, where + "normals and positions differ in count"};
    if (!p.uvs.empty() && p.uvs.size() != n * 2)
      return Error{Errc::malformed, where + "texture coordinates and positions differ in count"};
    if (p.indices.size() % 3 != 0)
      return Error{Errc::malformed, where + "indices are not whole triangles"};
    for (std::size_t i = 0; i < p.indices.size(); ++i)
      if (p.indices[i] >= n)
        return Error{Errc::malformed, where + "index " + std::to_string(p.indices[i]) +
                                          " is out of range (" + std::to_string(n) + " vertices)"};
    for (float v : p.positions) {
      if (!std::isfinite(v))
        return Error{Errc::malformed, where + "a position is not a finite number"};
      // Past this, extents and bounding spheres overflow a float (and no scene is that big).
      if (std::fabs(v) > kMaxCoordinate)
        return Error{Errc::malformed, where + "a position is out of range (|coordinate| > 1e18)"};
    }
    for (float v : p.normals)
      if (!std::isfinite(v)) return Error{Errc::malformed, where + "a normal is not finite"};
    for (float v : p.uvs)
      if (!std::isfinite(v))
        return Error{Errc::malformed, where + "a texture coordinate is not finite"};
    if (p.material >= static_cast<int>(m.materials.size()))
      return Error{Errc::malformed, where + "names a material that does not exist"};
  }
  for (const auto& mat : m.materials)
    if (mat.base_color_texture >= static_cast<int>(m.images.size()))
      return Error{Errc::malformed, "material '" + mat.name + "' names an image that is missing"};
  for (const auto& img : m.images) {
    if (img.width > limits.max_texture_side || img.height > limits.max_texture_side ||
        std::uint64_t{img.width} * img.height > limits.max_texture_pixels)
      return Error{Errc::too_large, "image '" + img.name + "' is " + std::to_string(img.width) +
                                        "x" + std::to_string(img.height) + " px; the limit is " +
                                        std::to_string(limits.max_texture_pixels) + " pixels and " +
                                        std::to_string(limits.max_texture_side) + " px a side"};
  }
  if (m.triangle_count() == 0) return Error{Errc::empty, "the model has no triangles"};
  return {};
}

}  // namespace kiln::assets::pipeline
