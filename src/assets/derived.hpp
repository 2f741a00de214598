// Where the asset pipeline's output lives (docs/assets.md, "Derived files"): its version,
// and the object keys of an asset's levels and manifest. Shared by the worker that writes
// them (assets/pipeline) and the API that serves them.
#pragma once

#include <boost/json/object.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <string_view>

namespace kiln::assets {

// Bumped whenever the output for the same input bytes changes: assets are reprocessed for a
// new version only when asked (POST .../assets/{asset}/process).
inline constexpr const char* kPipelineVersion = "kiln-lod/1";

// The prefix of every derived file of an asset (every pipeline version): ends in '/'.
inline std::string derived_root(std::string_view project, std::string_view asset) {
  return "derived/" + std::string(project) + "/" + std::string(asset) + "/";
}

// The prefix of one pipeline version's files ("kiln-lod/1" -> ".../kiln-lod-1/").
inline std::string derived_prefix(std::string_view project, std::string_view asset,
                                  std::string_view pipeline = kPipelineVersion) {
  std::string version(pipeline);
  for (auto& c : version)
    if (c == '/') c = '-';
  return derived_root(project, asset) + version + "/";
}

// Whether the pipeline makes levels of a file with this name (by its extension: the formats
// of assets/pipeline/import.hpp) or this detected type.
inline bool is_model(std::string_view file_name, std::string_view detected_type) {
  static constexpr std::array<std::string_view, 12> kExtensions = {
      "glb", "gltf", "fbx", "obj", "dae", "ply", "stl", "3ds", "x", "off", "3mf", "ac"};
  const auto dot = file_name.rfind('.');
  if (dot != std::string_view::npos) {
    std::string ext(file_name.substr(dot + 1));
    for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (std::find(kExtensions.begin(), kExtensions.end(), ext) != kExtensions.end()) return true;
  }
  return detected_type == "model/gltf-binary" || detected_type == "model/gltf+json";
}

// Calls f(entry, content type) for each file a manifest lists (docs/assets.md "Manifest"):
// its levels (model/gltf-binary), then each texture's levels (their `mime_type`, else
// image/webp). An entry that is not an object is passed as null. Shared by the worker that
// stores them, the API that links them and `kiln convert` that clears them.
template <class F>
void for_each_file(boost::json::object& manifest, F&& f) {
  const auto each = [&](boost::json::value* list, const char* fallback) {
    if (list == nullptr || !list->is_array()) return;
    for (auto& v : list->as_array()) {
      auto* o = v.if_object();
      const auto* mime = o ? o->if_contains("mime_type") : nullptr;
      f(o, mime && mime->is_string() ? std::string(mime->as_string()) : std::string(fallback));
    }
  };
  each(manifest.if_contains("levels"), "model/gltf-binary");
  if (auto* textures = manifest.if_contains("textures"); textures && textures->is_array())
    for (auto& t : textures->as_array())
      if (auto* to = t.if_object()) each(to->if_contains("levels"), "image/webp");
}

}  // namespace kiln::assets
