#include "assets/pipeline/import.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

namespace kiln::assets::pipeline {
namespace {

std::string extension_of(std::string_view name) {
  const auto dot = name.rfind('.');
  if (dot == std::string_view::npos || dot + 1 == name.size()) return "";
  std::string ext(name.substr(dot + 1));
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext;
}

}  // namespace

Format detect_format(std::span<const std::uint8_t> b) {
  if (b.size() >= 4 && std::memcmp(b.data(), "glTF", 4) == 0) return Format::glb;
  std::size_t i = 0;
  if (b.size() >= 3 && b[0] == 0xef && b[1] == 0xbb && b[2] == 0xbf) i = 3;  // UTF-8 BOM
  while (i < b.size() && std::isspace(b[i])) ++i;
  if (i < b.size() && b[i] == '{') {
    // A JSON object naming "asset" near its start: glTF (the key is required, 5.1).
    const std::string_view head(reinterpret_cast<const char*>(b.data()) + i,
                                std::min<std::size_t>(b.size() - i, 64 * 1024));
    if (head.find("\"asset\"") != std::string_view::npos) return Format::gltf;
  }
  return Format::other;
}

namespace {
// Names and warnings as valid UTF-8 (they end up in JSON: the GLB's and the manifest).
Result<Model> clean(Result<Model> r) {
  if (!r) {
    r.error().detail = valid_utf8(r.error().detail);
    return r;
  }
  for (auto& m : r->materials) m.name = valid_utf8(m.name);
  for (auto& i : r->images) i.name = valid_utf8(i.name);
  for (auto& w : r->warnings) w = valid_utf8(w);
  return r;
}
Result<Model> import_any(std::span<const std::uint8_t> bytes, std::string_view file_name,
                         const Limits& limits);
}  // namespace

Result<Model> import_model(std::span<const std::uint8_t> bytes, std::string_view file_name,
                           const Limits& limits) {
  return clean(import_any(bytes, file_name, limits));
}

namespace {
Result<Model> import_any(std::span<const std::uint8_t> bytes, std::string_view file_name,
                         const Limits& limits) {
  const std::string ext = extension_of(file_name);
  const Format f = detect_format(bytes);
  if (f == Format::glb || f == Format::gltf) return import_gltf(bytes, limits);
  if (ext == "glb" || ext == "gltf")
    return Error{Errc::unsupported, "the file is named ." + ext +
                                        " but is not glTF (no GLB header, no JSON with \"asset\")"};
  if (ext.empty())
    return Error{Errc::unsupported,
                 "the file has no extension and is not glTF: name it after its format (.fbx, "
                 ".obj, .dae, .ply, .stl, ...)"};
  return import_assimp(bytes, ext, limits);
}
}  // namespace

}  // namespace kiln::assets::pipeline
