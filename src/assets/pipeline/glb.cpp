#include "assets/pipeline/glb.hpp"

#include "assets/pipeline/lod_chain.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

namespace kiln::assets::pipeline {
namespace {

namespace json = boost::json;

constexpr int kByte = 5120, kFloat = 5126, kUShort = 5123, kUInt = 5125;
constexpr int kArrayBuffer = 34962, kElementArrayBuffer = 34963;

class Writer {
 public:
  // A buffer view over `size` bytes copied from `data`; returns its index.
  int view(const void* data, std::size_t size, int target, int stride = 0) {
    while (bin_.size() % 4 != 0) bin_.push_back(0);
    json::object v{{"buffer", 0}, {"byteOffset", bin_.size()}, {"byteLength", size}};
    if (target != 0) v["target"] = target;
    if (stride != 0) v["byteStride"] = stride;
    const auto* p = static_cast<const std::uint8_t*>(data);
    bin_.insert(bin_.end(), p, p + size);
    views_.push_back(std::move(v));
    return static_cast<int>(views_.size()) - 1;
  }
  int accessor(json::object a) {
    accessors_.push_back(std::move(a));
    return static_cast<int>(accessors_.size()) - 1;
  }
  int floats(const std::vector<float>& v, int components, const char* type, bool min_max) {
    const int bv = view(v.data(), v.size() * 4, kArrayBuffer);
    json::object a{{"bufferView", bv},
                   {"componentType", kFloat},
                   {"count", v.size() / components},
                   {"type", type}};
    if (min_max) {
      json::array mn, mx;
      for (int c = 0; c < components; ++c) {
        float lo = v[c], hi = v[c];
        for (std::size_t i = c; i < v.size(); i += components) {
          lo = std::min(lo, v[i]);
          hi = std::max(hi, v[i]);
        }
        mn.push_back(lo);
        mx.push_back(hi);
      }
      a["min"] = std::move(mn);
      a["max"] = std::move(mx);
    }
    return accessor(std::move(a));
  }
  // Positions on the grid: (p - origin) / step, rounded, as unsigned 16-bit (x, y, z, pad).
  int positions_q(const std::vector<float>& v, const std::array<double, 3>& origin, double step) {
    std::vector<std::uint16_t> q((v.size() / 3) * 4, 0);
    std::array<std::uint16_t, 3> lo{65535, 65535, 65535}, hi{0, 0, 0};
    for (std::size_t i = 0, j = 0; i < v.size(); i += 3, j += 4)
      for (int c = 0; c < 3; ++c) {
        const double g = std::round((v[i + c] - origin[c]) / step);
        q[j + c] = static_cast<std::uint16_t>(std::clamp(g, 0.0, 65535.0));
        lo[c] = std::min(lo[c], q[j + c]);
        hi[c] = std::max(hi[c], q[j + c]);
      }
    const int bv = view(q.data(), q.size() * 2, kArrayBuffer, 8);
    return accessor({{"bufferView", bv},
                     {"componentType", kUShort},
                     {"count", v.size() / 3},
                     {"type", "VEC3"},
                     {"min", json::array{lo[0], lo[1], lo[2]}},
                     {"max", json::array{hi[0], hi[1], hi[2]}}});
  }
  // Unit normals as normalized signed bytes (x, y, z, pad).
  int normals_q(const std::vector<float>& v) {
    std::vector<std::int8_t> q((v.size() / 3) * 4, 0);
    for (std::size_t i = 0, j = 0; i < v.size(); i += 3, j += 4)
      for (int c = 0; c < 3; ++c)
        q[j + c] = static_cast<std::int8_t>(std::lround(std::clamp(v[i + c], -1.0f, 1.0f) * 127));
    const int bv = view(q.data(), q.size(), kArrayBuffer, 4);
    return accessor({{"bufferView", bv},
                     {"componentType", kByte},
                     {"normalized", true},
                     {"count", v.size() / 3},
                     {"type", "VEC3"}});
  }
  // UVs within [0, 1] as normalized unsigned 16-bit.
  int uvs_q(const std::vector<float>& v) {
    std::vector<std::uint16_t> q(v.size());
    for (std::size_t i = 0; i < v.size(); ++i)
      q[i] = static_cast<std::uint16_t>(std::lround(std::clamp(v[i], 0.0f, 1.0f) * 65535));
    const int bv = view(q.data(), q.size() * 2, kArrayBuffer);
    return accessor({{"bufferView", bv},
                     {"componentType", kUShort},
                     {"normalized", true},
                     {"count", v.size() / 2},
                     {"type", "VEC2"}});
  }
  int indices(const std::vector<std::uint32_t>& idx, std::size_t vertex_count) {
    int bv;
    int type;
    if (vertex_count < 65535) {
      std::vector<std::uint16_t> small(idx.begin(), idx.end());
      bv = view(small.data(), small.size() * 2, kElementArrayBuffer);
      type = kUShort;
    } else {
      bv = view(idx.data(), idx.size() * 4, kElementArrayBuffer);
      type = kUInt;
    }
    return accessor(
        {{"bufferView", bv}, {"componentType", type}, {"count", idx.size()}, {"type", "SCALAR"}});
  }

  json::array views_, accessors_;
  std::vector<std::uint8_t> bin_;
};

void put32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

}  // namespace

std::vector<std::uint8_t> write_glb(const GlbInput& in) {
  Writer w;
  json::array primitives, materials, textures, images;
  // (source material, textured) -> output material; a primitive without UVs gets its
  // material without the texture (a texture needs TEXCOORD_0).
  std::map<std::pair<int, bool>, int> material_of;
  std::map<int, int> texture_of;  // source image -> output texture
  bool webp = false;
  const auto texture = [&](int image) {
    if (auto it = texture_of.find(image); it != texture_of.end()) return it->second;
    const auto& img = in.images[image];
    const int bv = w.view(img.data.data(), img.data.size(), 0);
    json::object io{{"bufferView", bv}, {"mimeType", img.mime_type}};
    if (!img.name.empty()) io["name"] = img.name;
    images.push_back(std::move(io));
    if (img.mime_type == "image/webp") {
      webp = true;
      textures.push_back(json::object{
          {"extensions",
           json::object{{"EXT_texture_webp", json::object{{"source", images.size() - 1}}}}}});
    } else {
      textures.push_back(json::object{{"source", images.size() - 1}});
    }
    return texture_of[image] = static_cast<int>(textures.size()) - 1;
  };
  const auto material = [&](int src, bool has_uv) {
    const bool textured = has_uv && src >= 0 && src < static_cast<int>(in.materials.size()) &&
                          in.materials[src].base_color_texture >= 0 &&
                          in.materials[src].base_color_texture < static_cast<int>(in.images.size());
    const auto key = std::make_pair(src, textured);
    if (auto it = material_of.find(key); it != material_of.end()) return it->second;
    Material m =
        src >= 0 && src < static_cast<int>(in.materials.size()) ? in.materials[src] : Material{};
    json::object pbr{{"baseColorFactor", json::array{m.base_color[0], m.base_color[1],
                                                     m.base_color[2], m.base_color[3]}},
                     {"metallicFactor", m.metallic},
                     {"roughnessFactor", m.roughness}};
    if (textured) pbr["baseColorTexture"] = json::object{{"index", texture(m.base_color_texture)}};
    json::object mo{{"pbrMetallicRoughness", std::move(pbr)}};
    if (!m.name.empty()) mo["name"] = m.name;
    if (m.double_sided) mo["doubleSided"] = true;
    materials.push_back(std::move(mo));
    return material_of[key] = static_cast<int>(materials.size()) - 1;
  };

  // The grid of quantized positions: from the box's corner, one uniform step.
  Box box;
  Sphere unused;
  if (in.quantize && in.box != nullptr)
    box = *in.box;
  else if (in.quantize)
    compute_bounds(in.primitives, box, unused);
  const double step = quantization_step(box);
  const std::array<double, 3> origin{box.min[0], box.min[1], box.min[2]};
  const auto in_unit = [](const std::vector<float>& uv) {
    return std::all_of(uv.begin(), uv.end(), [](float f) { return f >= 0 && f <= 1; });
  };
  for (const auto& p : in.primitives) {
    if (p.indices.empty()) continue;
    json::object attrs{{"POSITION", in.quantize ? w.positions_q(p.positions, origin, step)
                                                : w.floats(p.positions, 3, "VEC3", true)}};
    if (!p.normals.empty())
      attrs["NORMAL"] =
          in.quantize ? w.normals_q(p.normals) : w.floats(p.normals, 3, "VEC3", false);
    if (!p.uvs.empty())
      attrs["TEXCOORD_0"] =
          in.quantize && in_unit(p.uvs) ? w.uvs_q(p.uvs) : w.floats(p.uvs, 2, "VEC2", false);
    json::object prim{{"attributes", std::move(attrs)},
                      {"indices", w.indices(p.indices, p.vertex_count())},
                      {"material", material(p.material, !p.uvs.empty())},
                      {"mode", 4}};
    primitives.push_back(std::move(prim));
  }

  json::object node{{"mesh", 0}};
  if (in.quantize) {
    node["translation"] = json::array{origin[0], origin[1], origin[2]};
    node["scale"] = json::array{step, step, step};
  }
  json::object doc{{"asset", json::object{{"version", "2.0"}, {"generator", in.generator}}},
                   {"scene", 0},
                   {"scenes", json::array{json::object{{"nodes", json::array{0}}}}},
                   {"nodes", json::array{node}},
                   {"meshes", json::array{json::object{{"primitives", std::move(primitives)}}}},
                   {"materials", std::move(materials)}};
  if (!textures.empty()) {
    doc["textures"] = std::move(textures);
    doc["images"] = std::move(images);
  }
  json::array extensions;
  if (in.quantize) extensions.push_back("KHR_mesh_quantization");
  if (webp) extensions.push_back("EXT_texture_webp");  // without a fallback: required
  if (!extensions.empty()) {
    doc["extensionsUsed"] = extensions;
    doc["extensionsRequired"] = extensions;
  }
  while (w.bin_.size() % 4 != 0) w.bin_.push_back(0);
  doc["accessors"] = std::move(w.accessors_);
  doc["bufferViews"] = std::move(w.views_);
  doc["buffers"] = json::array{json::object{{"byteLength", w.bin_.size()}}};

  std::string text = json::serialize(doc);
  while (text.size() % 4 != 0) text.push_back(' ');
  std::vector<std::uint8_t> out;
  out.reserve(12 + 8 + text.size() + 8 + w.bin_.size());
  put32(out, 0x46546C67);  // "glTF"
  put32(out, 2);
  put32(out, static_cast<std::uint32_t>(12 + 8 + text.size() + 8 + w.bin_.size()));
  put32(out, static_cast<std::uint32_t>(text.size()));
  put32(out, 0x4E4F534A);  // "JSON"
  out.insert(out.end(), text.begin(), text.end());
  put32(out, static_cast<std::uint32_t>(w.bin_.size()));
  put32(out, 0x004E4942);  // "BIN\0"
  out.insert(out.end(), w.bin_.begin(), w.bin_.end());
  return out;
}

double quantization_step(const Box& box) {
  double extent = 0;
  for (int c = 0; c < 3; ++c)
    extent = std::max(extent, static_cast<double>(box.max[c]) - box.min[c]);
  return extent > 0 ? extent / 65535.0 : 1.0;
}

double quantization_error(const Box& box) {
  return std::sqrt(3.0) / 2.0 * quantization_step(box);
}

}  // namespace kiln::assets::pipeline
