// GLB round trips (what the writer writes, the importer reads back; quantized levels within
// their grid) and convert(): the manifest, texture levels per level, quantization where it
// keeps the error. Khronos' glTF-Validator checks the same files in tests/e2e/test_pipeline.py.
#include "assets/pipeline/glb.hpp"
#include "assets/pipeline/convert.hpp"
#include "assets/pipeline/image_header.hpp"
#include "assets/pipeline/import.hpp"
#include "assets/pipeline/lod_chain.hpp"
#include "assets/pipeline/test_inputs.hpp"
#include "platform/codec.hpp"

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

namespace pl = kiln::assets::pipeline;
namespace json = boost::json;
using pl::testing::sphere_model;

namespace {

TEST(PipelineGlb, WritesWhatItsImporterReadsBack) {
  const pl::Model m = sphere_model(30, 30);
  const auto levels = pl::build_lod_chain(m, {});
  for (const auto& l : levels) {
    const auto glb = pl::write_glb({l.primitives, m.materials, m.images});
    ASSERT_EQ(glb.size() % 4, 0u);
    auto back = pl::import_model(glb, "level.glb", {});
    ASSERT_TRUE(back) << back.error().detail;
    EXPECT_EQ(back->triangle_count(), l.triangles);
    EXPECT_EQ(back->primitives[0].normals.size(), l.primitives[0].normals.size());
    ASSERT_EQ(back->materials.size(), 1u);
    EXPECT_FLOAT_EQ(back->materials[0].base_color[0], 0.8f);
  }
}

TEST(PipelineConvert, TheManifestDescribesEveryLevel) {
  const pl::Model m = sphere_model(80, 80);
  const auto levels = pl::build_lod_chain(m, {});
  const auto glb = pl::write_glb({levels[0].primitives, m.materials, m.images});
  std::vector<std::string> stages;
  auto out =
      pl::convert(glb, "ball.glb", {}, [&](std::string_view s, int) { stages.emplace_back(s); });
  ASSERT_TRUE(out) << out.error().detail;
  const auto& man = out->manifest;
  EXPECT_EQ(man.at("pipeline").as_string(), pl::kPipelineVersion);
  const auto& ls = man.at("levels").as_array();
  ASSERT_EQ(ls.size(), out->files.size());
  for (std::size_t i = 0; i < ls.size(); ++i) {
    EXPECT_EQ(ls[i].at("bytes").to_number<std::size_t>(), out->files[i].bytes.size());
    EXPECT_EQ(ls[i].at("file").as_string(), out->files[i].file);
  }
  EXPECT_EQ(man.at("source").at("triangles").to_number<std::uint64_t>(), m.triangle_count());
  EXPECT_EQ(stages.front(), "import");
}

// The GLB's JSON chunk (glTF 2.0 spec 4.4.3).
json::object glb_json(const std::vector<std::uint8_t>& glb) {
  std::uint32_t len = 0;
  std::memcpy(&len, glb.data() + 12, 4);
  return json::parse(std::string_view(reinterpret_cast<const char*>(glb.data()) + 20, len))
      .as_object();
}

pl::Model textured_sphere(std::vector<std::uint8_t> image) {
  pl::Model m = sphere_model(60, 60);
  const auto h = pl::read_image_header(image);
  m.images.push_back({"albedo", h ? h->mime_type : "image/png", std::move(image), h ? h->width : 1,
                      h ? h->height : 1});
  m.materials[0].base_color_texture = 0;
  return m;
}

TEST(PipelineConvert, EachLevelCarriesTheTextureLevelOfItsNumber) {
  const pl::Model m = textured_sphere(pl::testing::png_of(1024, 1024));
  const auto glb = pl::write_glb({m.primitives, m.materials, m.images});
  pl::ConvertOptions o;
  o.lod.min_triangles = 100;
  auto out = pl::convert(glb, "ball.glb", o);
  ASSERT_TRUE(out) << out.error().detail;
  const auto& man = out->manifest;
  const auto& textures = man.at("textures").as_array();
  ASSERT_EQ(textures.size(), 1u);
  const auto& tl = textures[0].at("levels").as_array();
  ASSERT_EQ(tl.size(), 3u);  // 1024, 512, 256
  EXPECT_EQ(textures[0].at("source").at("width").to_number<int>(), 1024);
  EXPECT_EQ(tl[2].at("width").to_number<int>(), 256);
  std::map<std::string, const pl::OutputFile*> files;
  for (const auto& f : out->files) files[f.file] = &f;
  for (const auto& l : tl) {
    const auto* f = files[std::string(l.at("file").as_string())];
    ASSERT_NE(f, nullptr);
    EXPECT_EQ(f->bytes.size(), l.at("bytes").to_number<std::size_t>());
  }
  const auto& levels = man.at("levels").as_array();
  ASSERT_GE(levels.size(), 4u);
  for (std::size_t i = 0; i < levels.size(); ++i) {
    const auto want = std::min<std::size_t>(i, 2);
    EXPECT_EQ(levels[i].at("texture_level").to_number<std::size_t>(), want);
    // The level embeds exactly that texture level's bytes.
    const auto& glb_file = *files[std::string(levels[i].at("file").as_string())];
    const auto doc = glb_json(glb_file.bytes);
    const auto& img = doc.at("images").as_array().at(0).as_object();
    const auto& view =
        doc.at("bufferViews").as_array().at(img.at("bufferView").to_number<std::size_t>());
    const auto& texture = *files[std::string(tl[want].at("file").as_string())];
    EXPECT_EQ(view.at("byteLength").to_number<std::size_t>(), texture.bytes.size());
    EXPECT_EQ(img.at("mimeType").as_string(), tl[want].at("mime_type").as_string());
    if (img.at("mimeType") == "image/webp") {
      const auto& required = doc.at("extensionsRequired").as_array();
      EXPECT_NE(std::find(required.begin(), required.end(), json::value("EXT_texture_webp")),
                required.end());
      EXPECT_TRUE(doc.at("textures").as_array().at(0).at("extensions").is_object());
    }
  }
}

// Kiln reads back what it writes: a level whose texture is WebP (EXT_texture_webp, required),
// and a .gltf whose WebP comes as a data URI, which tinygltf does not decode itself.
TEST(PipelineImport, WebPTexturesImportThroughTheirExtension) {
  const pl::Model m = textured_sphere(pl::testing::png_of(600, 600));
  const auto glb = pl::write_glb({m.primitives, m.materials, m.images});
  auto out = pl::convert(glb, "ball.glb", {});
  ASSERT_TRUE(out) << out.error().detail;
  const auto& level1 = out->files.at(1);
  ASSERT_EQ(level1.file, "lod1.glb");
  ASSERT_TRUE(glb_json(level1.bytes).contains("extensionsRequired"));
  auto back = pl::import_model(level1.bytes, "lod1.glb", {});
  ASSERT_TRUE(back) << back.error().detail;
  ASSERT_EQ(back->images.size(), 1u);
  EXPECT_EQ(back->images[0].mime_type, "image/webp");
  EXPECT_EQ(back->images[0].width, 300u);
  EXPECT_EQ(back->materials.at(0).base_color_texture, 0);

  // The same WebP as a data URI in a .gltf, with the extension only used (a PNG fallback
  // absent): the texture is read, not dropped.
  const auto& webp = back->images[0].data;
  auto doc = glb_json(level1.bytes);
  std::uint32_t json_len = 0;
  std::memcpy(&json_len, level1.bytes.data() + 12, 4);
  const auto* bin = level1.bytes.data() + 20 + json_len + 8;
  const std::size_t bin_len = level1.bytes.size() - (20 + json_len + 8);
  doc["buffers"].as_array()[0].as_object()["uri"] =
      "data:application/octet-stream;base64," +
      kiln::codec::base64({reinterpret_cast<const char*>(bin), bin_len});
  auto& image = doc["images"].as_array()[0].as_object();
  image.erase("bufferView");
  image.erase("mimeType");
  image["uri"] = "data:image/webp;base64," +
                 kiln::codec::base64({reinterpret_cast<const char*>(webp.data()), webp.size()});
  doc.erase("extensionsRequired");
  const auto text = json::serialize(doc);
  auto gltf = pl::import_model({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()},
                               "ball.gltf", {});
  ASSERT_TRUE(gltf) << gltf.error().detail;
  ASSERT_EQ(gltf->images.size(), 1u) << (gltf->warnings.empty() ? "" : gltf->warnings.front());
  EXPECT_EQ(gltf->images[0].data, webp);
  EXPECT_EQ(gltf->materials.at(0).base_color_texture, 0);
  EXPECT_TRUE(gltf->warnings.empty()) << gltf->warnings.front();
}

TEST(PipelineConvert, ATextureThatDoesNotDecodeIsLeftOutWithAWarning) {
  auto png = pl::testing::png_of(128, 128);
  for (std::size_t i = 64; i < png.size(); ++i) png[i] = static_cast<std::uint8_t>(i * 7);
  const pl::Model m = textured_sphere(png);
  const auto glb = pl::write_glb({m.primitives, m.materials, m.images});
  auto out = pl::convert(glb, "ball.glb", {});
  ASSERT_TRUE(out) << out.error().detail;
  EXPECT_TRUE(out->manifest.at("textures").as_array().empty());
  const auto& warnings = out->manifest.at("warnings").as_array();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].as_string().find("does not decode"), std::string::npos);
  const auto doc = glb_json(out->files.front().bytes);
  EXPECT_FALSE(doc.contains("images")) << "the material keeps its color, not the texture";
}

TEST(PipelineGlb, AQuantizedLevelReadsBackWithinItsGrid) {
  const pl::Model m = sphere_model(60, 60);
  const auto& prims = m.primitives;
  const auto plain = pl::write_glb({prims, m.materials, m.images});
  pl::GlbInput q{prims, m.materials, m.images};
  q.quantize = true;
  const auto glb = pl::write_glb(q);
  EXPECT_LT(glb.size() * 10, plain.size() * 7) << "vertex bytes halve";
  const auto doc = glb_json(glb);
  EXPECT_EQ(doc.at("extensionsRequired").as_array().at(0).as_string(), "KHR_mesh_quantization");
  auto back = pl::import_model(glb, "q.glb", {});
  ASSERT_TRUE(back) << back.error().detail;
  ASSERT_EQ(back->primitives.size(), 1u);
  const auto& a = prims[0];
  const auto& b = back->primitives[0];
  ASSERT_EQ(b.indices, a.indices) << "the same vertices in the same order";
  pl::Box box;
  pl::Sphere unused;
  pl::compute_bounds(prims, box, unused);
  const double grid = pl::quantization_error(box);
  EXPECT_GT(grid, 0);
  double worst = 0;
  for (std::size_t v = 0; v < a.positions.size(); v += 3)
    worst = std::max<double>(
        worst, std::hypot(a.positions[v] - b.positions[v], a.positions[v + 1] - b.positions[v + 1],
                          a.positions[v + 2] - b.positions[v + 2]));
  EXPECT_LE(worst, grid * 1.001);
  for (std::size_t i = 0; i < a.normals.size(); ++i)
    EXPECT_NEAR(a.normals[i], b.normals[i], 1.0 / 127 + 1e-6);
  for (std::size_t i = 0; i < a.uvs.size(); ++i)
    EXPECT_NEAR(a.uvs[i], b.uvs[i], 1.0 / 65535 + 1e-6);
}

TEST(PipelineConvert, LevelsAreQuantizedWhereTheGridKeepsTheirError) {
  const pl::Model m = sphere_model(120, 120);
  const auto glb = pl::write_glb({m.primitives, m.materials, m.images});
  pl::ConvertOptions o;
  o.lod.min_triangles = 100;
  auto out = pl::convert(glb, "ball.glb", o);
  ASSERT_TRUE(out) << out.error().detail;
  const auto& levels = out->manifest.at("levels").as_array();
  ASSERT_GE(levels.size(), 4u);
  EXPECT_FALSE(levels[0].at("quantized").as_bool()) << "level 0 is exact";
  EXPECT_EQ(levels[0].at("error").to_number<double>(), 0);
  // The same chain of what convert() imported, unquantized: a quantized level reports its
  // error plus the grid's.
  const auto imported = pl::import_model(glb, "ball.glb", {});
  ASSERT_TRUE(imported);
  const auto chain = pl::build_lod_chain(*imported, o.lod);
  ASSERT_EQ(chain.size(), levels.size());
  std::size_t quantized = 0;
  for (std::size_t i = 1; i < levels.size(); ++i) {
    const double grid = pl::quantization_error(chain[0].box);
    const bool q = levels[i].at("quantized").as_bool();
    EXPECT_EQ(q, grid <= 0.1 * chain[i].error) << "level " << i;
    EXPECT_DOUBLE_EQ(levels[i].at("error").to_number<double>(),
                     q ? chain[i].error + grid : chain[i].error);
    quantized += q;
    const auto doc = glb_json(out->files[i].bytes);
    EXPECT_EQ(doc.contains("extensionsRequired"), q);
  }
  EXPECT_GE(quantized, 2u);
  for (std::size_t i = 1; i < levels.size(); ++i)
    EXPECT_GE(levels[i].at("error").to_number<double>(),
              levels[i - 1].at("error").to_number<double>());
}

}  // namespace
