#include "assets/pipeline/convert.hpp"

#include "assets/pipeline/glb.hpp"
#include "assets/pipeline/import.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <iterator>

namespace kiln::assets::pipeline {
namespace {

namespace json = boost::json;

json::array vec3(const std::array<float, 3>& v) {
  return json::array{v[0], v[1], v[2]};
}

json::object bounds_json(const Box& b, const Sphere& s) {
  return {{"box", json::object{{"min", vec3(b.min)}, {"max", vec3(b.max)}}},
          {"sphere", json::object{{"center", vec3(s.center)}, {"radius", s.radius}}}};
}

}  // namespace

bool is_output_name(std::string_view f) {
  const auto digits = [](std::string_view s) {
    return !s.empty() && s.size() <= 4 &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  if (f.starts_with("lod") && f.ends_with(".glb")) return digits(f.substr(3, f.size() - 7));
  if (!f.starts_with("tex")) return false;
  const auto dot = f.rfind('.');
  if (dot == std::string_view::npos) return false;
  const auto ext = f.substr(dot);
  if (ext != ".webp" && ext != ".png" && ext != ".jpg") return false;
  const auto stem = f.substr(3, dot - 3);
  const auto dash = stem.find('-');
  return dash != std::string_view::npos && digits(stem.substr(0, dash)) &&
         digits(stem.substr(dash + 1));
}

bool quantized(std::span<const Level> levels, std::size_t i) {
  return i > 0 && i < levels.size() &&
         quantization_error(levels.front().box) <= 0.1 * levels[i].error;
}

Result<Converted> convert(std::span<const std::uint8_t> bytes, std::string_view file_name,
                          const ConvertOptions& options,
                          const std::function<void(std::string_view, int)>& progress) {
  const auto tell = [&](std::string_view stage, int percent) {
    if (progress) progress(stage, percent);
  };
  tell("import", 0);
  KILN_TRY(model, import_model(bytes, file_name, options.limits));
  tell("lod", 20);
  const auto levels = build_lod_chain(model, options.lod);

  // The base-color textures' levels; one that does not decode is dropped with a warning.
  tell("textures", 50);
  Converted out;
  std::vector<std::vector<TextureLevel>> texture_levels_of(model.images.size());
  std::vector<bool> used(model.images.size(), false);
  for (const auto& m : model.materials)
    if (m.base_color_texture >= 0 && static_cast<std::size_t>(m.base_color_texture) < used.size())
      used[m.base_color_texture] = true;
  json::array texture_docs;
  for (std::size_t t = 0; t < model.images.size(); ++t) {
    if (!used[t]) continue;
    const auto& img = model.images[t];
    auto made = texture_levels(img, options.textures);
    if (!made) {
      if (made.error().code == Errc::internal) return made.error();
      model.warnings.push_back(made.error().detail + "; left out");
      continue;
    }
    json::array docs;
    for (std::size_t l = 0; l < made->size(); ++l) {
      const auto& tl = (*made)[l];
      const auto ext = tl.mime_type == "image/png"    ? ".png"
                       : tl.mime_type == "image/jpeg" ? ".jpg"
                                                      : ".webp";
      OutputFile f{"tex" + std::to_string(t) + "-" + std::to_string(l) + ext, tl.bytes};
      docs.push_back({{"level", l},
                      {"file", f.file},
                      {"mime_type", tl.mime_type},
                      {"width", tl.width},
                      {"height", tl.height},
                      {"bytes", tl.bytes.size()}});
      out.files.push_back(std::move(f));
    }
    texture_docs.push_back({{"name", img.name},
                            {"source", json::object{{"mime_type", img.mime_type},
                                                    {"width", img.width},
                                                    {"height", img.height},
                                                    {"bytes", img.data.size()}}},
                            {"levels", std::move(docs)}});
    texture_levels_of[t] = std::move(*made);
    tell("textures", 50 + static_cast<int>(30 * (t + 1) / model.images.size()));
  }
  auto materials = model.materials;
  for (auto& m : materials)
    if (m.base_color_texture >= 0 && texture_levels_of[m.base_color_texture].empty())
      m.base_color_texture = -1;

  tell("write", 80);
  json::array level_docs;
  std::vector<OutputFile> glbs;
  for (std::size_t i = 0; i < levels.size(); ++i) {
    const auto& l = levels[i];
    // Level i carries texture level i of each texture (its last past that).
    std::vector<Image> images(model.images.size());
    std::size_t texture_level = 0;
    for (std::size_t t = 0; t < images.size(); ++t) {
      const auto& tl = texture_levels_of[t];
      if (tl.empty()) continue;
      const auto pick = std::min(i, tl.size() - 1);
      texture_level = std::max(texture_level, pick);
      images[t] = Image{model.images[t].name, tl[pick].mime_type, tl[pick].bytes, tl[pick].width,
                        tl[pick].height};
    }
    // One grid for every level (level 0's box holds them all): errors stay non-decreasing.
    const double grid = quantization_error(levels.front().box);
    const bool quantize = quantized(levels, i);
    GlbInput glb{l.primitives, materials, images};
    glb.quantize = quantize;
    glb.box = &levels.front().box;
    OutputFile f{"lod" + std::to_string(i) + ".glb", write_glb(glb)};
    json::object d{{"level", i},
                   {"file", f.file},
                   {"triangles", l.triangles},
                   {"error", quantize ? l.error + grid : l.error},
                   {"bytes", f.bytes.size()},
                   {"quantized", quantize},
                   {"texture_level", texture_level}};
    for (auto& [k, v] : bounds_json(l.box, l.sphere)) d[k] = v;
    level_docs.push_back(std::move(d));
    glbs.push_back(std::move(f));
  }
  out.files.insert(out.files.begin(), std::make_move_iterator(glbs.begin()),
                   std::make_move_iterator(glbs.end()));
  json::array warnings;  // at most 100, each at most ~300 bytes (importers cut theirs)
  for (const auto& w : model.warnings) {
    if (warnings.size() == 100) {
      warnings.push_back(json::string("... and " + std::to_string(model.warnings.size() - 100) +
                                      " more warnings"));
      break;
    }
    warnings.push_back(json::string(w.size() > 300 ? w.substr(0, 300) + "..." : w));
  }
  out.manifest = {{"pipeline", kPipelineVersion},
                  {"source", json::object{{"name", file_name},
                                          {"bytes", bytes.size()},
                                          {"triangles", model.triangle_count()},
                                          {"vertices", model.vertex_count()}}},
                  {"bounds", bounds_json(levels.front().box, levels.front().sphere)},
                  {"levels", std::move(level_docs)},
                  {"textures", std::move(texture_docs)},
                  {"warnings", std::move(warnings)}};
  tell("write", 100);
  return out;
}

}  // namespace kiln::assets::pipeline
