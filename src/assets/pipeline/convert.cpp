#include "assets/pipeline/convert.hpp"

#include "assets/pipeline/glb.hpp"
#include "assets/pipeline/import.hpp"

#include <boost/json.hpp>

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

Result<Converted> convert(std::span<const std::uint8_t> bytes, std::string_view file_name,
                          const ConvertOptions& options,
                          const std::function<void(std::string_view, int)>& progress) {
  const auto tell = [&](std::string_view stage, int percent) {
    if (progress) progress(stage, percent);
  };
  tell("import", 0);
  KILN_TRY(model, import_model(bytes, file_name, options.limits));
  tell("lod", 30);
  const auto levels = build_lod_chain(model, options.lod);
  tell("write", 80);

  Converted out;
  json::array level_docs;
  for (std::size_t i = 0; i < levels.size(); ++i) {
    const auto& l = levels[i];
    LevelFile f;
    f.file = "lod" + std::to_string(i) + ".glb";
    f.glb = write_glb({l.primitives, model.materials, model.images});
    json::object d{{"level", i},
                   {"file", f.file},
                   {"triangles", l.triangles},
                   {"error", l.error},
                   {"bytes", f.glb.size()}};
    for (auto& [k, v] : bounds_json(l.box, l.sphere)) d[k] = v;
    level_docs.push_back(std::move(d));
    out.files.push_back(std::move(f));
  }
  json::array images;
  for (const auto& img : model.images)
    images.push_back({{"name", img.name},
                      {"mime_type", img.mime_type},
                      {"width", img.width},
                      {"height", img.height},
                      {"bytes", img.data.size()}});
  json::array warnings;
  for (const auto& w : model.warnings) warnings.push_back(json::string(w));
  out.manifest = {{"pipeline", kPipelineVersion},
                  {"source", json::object{{"name", file_name},
                                          {"bytes", bytes.size()},
                                          {"triangles", model.triangle_count()},
                                          {"vertices", model.vertex_count()}}},
                  {"bounds", bounds_json(levels.front().box, levels.front().sphere)},
                  {"levels", std::move(level_docs)},
                  {"images", std::move(images)},
                  {"warnings", std::move(warnings)}};
  tell("write", 100);
  return out;
}

}  // namespace kiln::assets::pipeline
