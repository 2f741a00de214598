#include "assets/pipeline/glb.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstring>
#include <map>

namespace kiln::assets::pipeline {
namespace {

namespace json = boost::json;

constexpr int kFloat = 5126, kUShort = 5123, kUInt = 5125;
constexpr int kArrayBuffer = 34962, kElementArrayBuffer = 34963;

class Writer {
 public:
  // A buffer view over `size` bytes copied from `data`; returns its index.
  int view(const void* data, std::size_t size, int target) {
    while (bin_.size() % 4 != 0) bin_.push_back(0);
    json::object v{{"buffer", 0}, {"byteOffset", bin_.size()}, {"byteLength", size}};
    if (target != 0) v["target"] = target;
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
      // EXT_texture_webp without a fallback: the extension is required.
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

  for (const auto& p : in.primitives) {
    if (p.indices.empty()) continue;
    json::object attrs{{"POSITION", w.floats(p.positions, 3, "VEC3", true)}};
    if (!p.normals.empty()) attrs["NORMAL"] = w.floats(p.normals, 3, "VEC3", false);
    if (!p.uvs.empty()) attrs["TEXCOORD_0"] = w.floats(p.uvs, 2, "VEC2", false);
    json::object prim{{"attributes", std::move(attrs)},
                      {"indices", w.indices(p.indices, p.vertex_count())},
                      {"material", material(p.material, !p.uvs.empty())},
                      {"mode", 4}};
    primitives.push_back(std::move(prim));
  }

  json::object doc{{"asset", json::object{{"version", "2.0"}, {"generator", in.generator}}},
                   {"scene", 0},
                   {"scenes", json::array{json::object{{"nodes", json::array{0}}}}},
                   {"nodes", json::array{json::object{{"mesh", 0}}}},
                   {"meshes", json::array{json::object{{"primitives", std::move(primitives)}}}},
                   {"materials", std::move(materials)}};
  if (!textures.empty()) {
    doc["textures"] = std::move(textures);
    doc["images"] = std::move(images);
  }
  if (webp) {
    doc["extensionsUsed"] = json::array{"EXT_texture_webp"};
    doc["extensionsRequired"] = json::array{"EXT_texture_webp"};
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

}  // namespace kiln::assets::pipeline
