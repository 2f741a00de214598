// The pipeline in-process: importers on well-formed and hostile bytes, the LOD chain's
// promises (decreasing triangles, non-decreasing error, bounds). GLB round trips and
// convert(): glb_test.cpp. The child
// process, the validator and the full assimp-testmodels sweep are tests/e2e/test_pipeline.py.
#include "assets/pipeline/deviation.hpp"
#include "assets/pipeline/glb.hpp"
#include "assets/pipeline/image_header.hpp"
#include "assets/pipeline/import.hpp"
#include "assets/pipeline/lod_chain.hpp"
#include "assets/pipeline/test_inputs.hpp"

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <numbers>

namespace pl = kiln::assets::pipeline;
namespace json = boost::json;
using kiln::assets::pipeline::testing::sphere_model;

namespace {

std::span<const std::uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string base64(std::span<const std::uint8_t> in) {
  static const char* t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const std::uint32_t v = in[i] << 16 | in[i + 1] << 8 | in[i + 2];
    for (int k = 3; k >= 0; --k) out.push_back(t[(v >> (6 * k)) & 63]);
  }
  if (i + 1 == in.size()) {
    const std::uint32_t v = in[i] << 16;
    out += {t[v >> 18], t[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    const std::uint32_t v = in[i] << 16 | in[i + 1] << 8;
    out += {t[v >> 18], t[(v >> 12) & 63], t[(v >> 6) & 63], '='};
  }
  return out;
}

// A .gltf with one triangle (three float positions, three u16 indices) in a data-URI buffer;
// `patch` edits the JSON before it is written (the hostile cases).
std::string gltf_triangle(
    const std::function<void(json::object&, std::vector<std::uint8_t>&)>& patch = {}) {
  std::vector<std::uint8_t> bin(36 + 8);
  const float pos[9] = {0, 0, 0, 1, 0, 0, 0, 1, 0};
  std::memcpy(bin.data(), pos, 36);
  const std::uint16_t idx[3] = {0, 1, 2};
  std::memcpy(bin.data() + 36, idx, 6);
  json::object doc = json::parse(R"({
    "asset": {"version": "2.0"},
    "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
    "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
    "accessors": [
      {"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
       "min": [0, 0, 0], "max": [1, 1, 0]},
      {"bufferView": 1, "componentType": 5123, "count": 3, "type": "SCALAR"}],
    "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": 36},
                    {"buffer": 0, "byteOffset": 36, "byteLength": 6}],
    "buffers": [{"byteLength": 44}]})")
                         .as_object();
  if (patch) patch(doc, bin);
  doc["buffers"].as_array()[0].as_object()["uri"] =
      "data:application/octet-stream;base64," + base64(bin);
  return json::serialize(doc);
}

pl::Result<pl::Model> import_text(const std::string& s, std::string_view name = "m.gltf") {
  return pl::import_model(bytes_of(s), name, pl::Limits{});
}

TEST(PipelineImport, ReadsATriangleFromGltf) {
  auto m = import_text(gltf_triangle());
  ASSERT_TRUE(m) << m.error().detail;
  EXPECT_EQ(m->triangle_count(), 1u);
  EXPECT_EQ(m->bounds().max[0], 1.0f);
}

TEST(PipelineImport, NodeTransformsAreBakedIn) {
  auto m = import_text(gltf_triangle([](json::object& d, auto&) {
    d["nodes"] = json::parse(R"([{"children": [1], "translation": [10, 0, 0]},
                                 {"mesh": 0, "scale": [2, 2, 2]}])");
  }));
  ASSERT_TRUE(m) << m.error().detail;
  EXPECT_FLOAT_EQ(m->bounds().min[0], 10.0f);
  EXPECT_FLOAT_EQ(m->bounds().max[0], 12.0f);
}

struct Hostile {
  const char* name;
  std::function<void(json::object&, std::vector<std::uint8_t>&)> patch;
  pl::Errc code;
  const char* says;
};

TEST(PipelineImport, HostileGltfEndsInAClearError) {
  const std::vector<Hostile> cases = {
      {"index out of range", [](auto&, auto& bin) { bin[36] = 7; }, pl::Errc::malformed,
       "out of range"},
      {"NaN position",
       [](auto&, auto& bin) {
         const float nan = std::numeric_limits<float>::quiet_NaN();
         std::memcpy(bin.data() + 4, &nan, 4);
       },
       pl::Errc::malformed, "finite"},
      {"infinite position",
       [](auto&, auto& bin) {
         const float inf = std::numeric_limits<float>::infinity();
         std::memcpy(bin.data(), &inf, 4);
       },
       pl::Errc::malformed, "finite"},
      {"coordinates past any scene (a bounding sphere would overflow)",
       [](auto&, auto& bin) {
         const float big = 3e38f, neg = -3e38f;
         std::memcpy(bin.data(), &neg, 4);
         std::memcpy(bin.data() + 12, &big, 4);
       },
       pl::Errc::malformed, "out of range"},
      {"absurd count",
       [](json::object& d, auto&) {
         d["accessors"].as_array()[0].as_object()["count"] = 4'000'000'000ll;
       },
       pl::Errc::too_large, "limit"},
      {"accessor past its view",
       [](json::object& d, auto&) { d["accessors"].as_array()[1].as_object()["count"] = 30; },
       pl::Errc::malformed, "past"},
      {"view past its buffer (truncated)",
       [](json::object& d, auto& bin) {
         bin.resize(20);
         d["buffers"].as_array()[0].as_object()["byteLength"] = 20;
       },
       pl::Errc::malformed, ""},
      {"node cycle",
       [](json::object& d, auto&) {
         d["nodes"] = json::parse(R"([{"mesh": 0, "children": [1]}, {"children": [0]}])");
       },
       pl::Errc::malformed, "ancestor"},
      {"missing node",
       [](json::object& d, auto&) { d["scenes"] = json::parse(R"([{"nodes": [5]}])"); },
       pl::Errc::malformed, ""},
      {"compression extension required",
       [](json::object& d, auto&) {
         d["extensionsRequired"] = json::array{"KHR_draco_mesh_compression"};
         d["extensionsUsed"] = json::array{"KHR_draco_mesh_compression"};
       },
       pl::Errc::unsupported, "KHR_draco_mesh_compression"},
      {"external buffer",
       [](json::object& d, auto&) {
         d["buffers"].as_array().push_back(json::object{{"byteLength", 4}, {"uri", "/etc/passwd"}});
       },
       pl::Errc::malformed, "external files are not read"},
      {"no triangles",
       [](json::object& d, auto&) {
         d["meshes"].as_array()[0].as_object()["primitives"].as_array()[0].as_object()["mode"] = 0;
       },
       pl::Errc::empty, ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string text = gltf_triangle(c.patch);
    auto m = import_text(text);
    ASSERT_FALSE(m) << "imported";
    EXPECT_EQ(m.error().code, c.code) << m.error().detail;
    EXPECT_NE(m.error().detail.find(c.says), std::string::npos) << m.error().detail;
  }
}

TEST(PipelineImport, AHugeImageIsRefusedFromItsHeader) {
  // A PNG header claiming 100,000 x 100,000 px (40 GB of pixels), nothing after it.
  std::vector<std::uint8_t> png = {0x89, 'P',  'N', 'G', '\r', '\n', 0x1a, '\n', 0,    0, 0,
                                   13,   'I',  'H', 'D', 'R',  0,    1,    0x86, 0xa0, 0, 1,
                                   0x86, 0xa0, 8,   6,   0,    0,    0,    0,    0,    0, 0};
  const auto h = pl::read_image_header(png);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->width, 100'000u);
  auto m = import_text(gltf_triangle([&](json::object& d, auto&) {
    d["images"] = json::array{json::object{{"uri", "data:image/png;base64," + base64(png)}}};
    d["textures"] = json::array{json::object{{"source", 0}}};
  }));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::too_large) << m.error().detail;
  EXPECT_NE(m.error().detail.find("100000x100000"), std::string::npos) << m.error().detail;
}

// Found by fuzz_model: tinygltf 2.7 hands an image's buffer view to the image callback
// without checking that it lies within its buffer (a heap overflow on read).
TEST(PipelineImport, AnImageViewPastItsBufferIsRefusedUnread) {
  auto m = import_text(gltf_triangle([](json::object& d, auto&) {
    d["bufferViews"].as_array().push_back(
        json::object{{"buffer", 0}, {"byteOffset", 40}, {"byteLength", 1'000'000}});
    d["images"] = json::array{json::object{{"bufferView", 2}, {"mimeType", "image/png"}}};
    d["textures"] = json::array{json::object{{"source", 0}}};
  }));
  ASSERT_FALSE(m) << "imported";
  EXPECT_EQ(m.error().code, pl::Errc::malformed) << m.error().detail;
  EXPECT_NE(m.error().detail.find("image 0"), std::string::npos) << m.error().detail;
}

TEST(PipelineImport, AFileThatClaimsOneFormatAndIsAnother) {
  const std::string obj = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n";
  auto as_glb = pl::import_model(bytes_of(obj), "model.glb", {});
  ASSERT_FALSE(as_glb);
  EXPECT_EQ(as_glb.error().code, pl::Errc::unsupported);
  EXPECT_NE(as_glb.error().detail.find("not glTF"), std::string::npos);
  const std::string png = "\x89PNG\r\n\x1a\n garbage that is no model";
  auto as_fbx = pl::import_model(bytes_of(png), "model.fbx", {});
  ASSERT_FALSE(as_fbx);
  EXPECT_EQ(as_fbx.error().code, pl::Errc::malformed) << as_fbx.error().detail;
  auto truncated = pl::import_model(bytes_of(std::string("glTF\x02\0\0\0", 8)), "m.glb", {});
  ASSERT_FALSE(truncated);
  EXPECT_EQ(truncated.error().code, pl::Errc::malformed);
  // The content decides: OBJ bytes named .stl import as what they are not; assimp refuses.
  auto unknown = pl::import_model(bytes_of(obj), "model.xyz123", {});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, pl::Errc::unsupported);
}

TEST(PipelineImport, PointsAndLinesAloneAreEmptyNotMalformed) {
  const std::string obj = "v 0 0 0\nv 1 0 0\nv 0 1 0\np 1 2 3\nl 1 2\n";
  auto m = pl::import_model(bytes_of(obj), "cloud.obj", {});
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, pl::Errc::empty) << m.error().detail;
}

TEST(PipelineImport, AnObjNeverMakesTheImporterReadAPath) {
  // mtllib names a host file: the import succeeds without it (nothing is opened).
  const std::string obj = "mtllib /etc/passwd\nusemtl root\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n";
  auto m = pl::import_model(bytes_of(obj), "model.obj", {});
  ASSERT_TRUE(m) << m.error().detail;
  EXPECT_EQ(m->triangle_count(), 1u);
}

TEST(PipelineImport, ReadsTheFormatsArtistsUpload) {
  for (const char* f : {"OBJ/spider.obj", "FBX/spider.fbx", "Collada/duck.dae", "PLY/cube.ply",
                        "STL/Spider_ascii.stl", "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb",
                        "glTF2/BoxTextured-glTF-Embedded/BoxTextured.gltf"}) {
    SCOPED_TRACE(f);
    const std::string path = std::string(KILN_ASSIMP_MODELS) + "/" + f;
    const auto bytes = read_file(path);
    ASSERT_FALSE(bytes.empty()) << path;
    auto m = pl::import_model(bytes, path, {});
    ASSERT_TRUE(m) << m.error().detail;
    EXPECT_GT(m->triangle_count(), 0u);
  }
  // The embedded glTF's texture arrives as its encoded PNG, sized from its header.
  auto m = pl::import_model(
      read_file(std::string(KILN_ASSIMP_MODELS) + "/glTF2/BoxTextured-glTF-Binary/BoxTextured.glb"),
      "BoxTextured.glb", {});
  ASSERT_TRUE(m);
  ASSERT_EQ(m->images.size(), 1u);
  EXPECT_EQ(m->images[0].mime_type, "image/png");
  EXPECT_GT(m->images[0].width, 0u);
}

TEST(PipelineLod, LevelsShrinkAndTheirErrorGrows) {
  const pl::Model m = sphere_model();
  ASSERT_TRUE(pl::validate(m, {}));
  pl::LodOptions o;
  o.min_triangles = 500;
  const auto levels = pl::build_lod_chain(m, o);
  ASSERT_GE(levels.size(), 5u);
  EXPECT_EQ(levels[0].triangles, m.triangle_count());
  EXPECT_EQ(levels[0].error, 0.0);
  for (std::size_t i = 1; i < levels.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_LT(levels[i].triangles, levels[i - 1].triangles);
    // About the ratio: meshoptimizer lands near its target.
    EXPECT_LE(levels[i].triangles, levels[i - 1].triangles * 0.75);
    EXPECT_GE(levels[i].error, levels[i - 1].error);
    EXPECT_GT(levels[i].error, 0.0);
    EXPECT_LT(levels[i].error, 2.0);  // never more than the radius
    EXPECT_GE(levels[i].triangles * 2, std::uint64_t{o.min_triangles} / 2);
  }
  // The error is honest: every vertex of a level lies on the sphere within it (the level
  // moved the surface by at most its error; its vertices are original vertices here).
  for (const auto& l : levels)
    for (const auto& p : l.primitives)
      for (std::size_t v = 0; v < p.positions.size(); v += 3) {
        const double d = std::hypot(p.positions[v], p.positions[v + 1], p.positions[v + 2]);
        ASSERT_NEAR(d, 2.0, 1e-4);
      }
}

TEST(PipelineLod, BoundsHoldEveryVertexOfTheirLevel) {
  const auto levels = pl::build_lod_chain(sphere_model(60, 60), {});
  for (const auto& l : levels)
    for (const auto& p : l.primitives)
      for (std::size_t v = 0; v < p.positions.size(); v += 3) {
        for (int a = 0; a < 3; ++a) {
          ASSERT_GE(p.positions[v + a], l.box.min[a]);
          ASSERT_LE(p.positions[v + a], l.box.max[a]);
        }
        const double d =
            std::hypot(p.positions[v] - l.sphere.center[0], p.positions[v + 1] - l.sphere.center[1],
                       p.positions[v + 2] - l.sphere.center[2]);
        ASSERT_LE(d, l.sphere.radius);
      }
}

// A rough height field: meshoptimizer's estimate (distance to the collapsed planes) falls
// short of how far its vertices end up from a level; the chain measures them.
TEST(PipelineLod, AnErrorIsAtLeastHowFarTheOriginalsVerticesLieFromTheLevel) {
  pl::Model m;
  pl::Primitive p;
  const int n = 64;  // 4,225 vertices: under error_samples, so every one is measured
  for (int y = 0; y <= n; ++y)
    for (int x = 0; x <= n; ++x)
      p.positions.insert(p.positions.end(),
                         {float(x), float(y),
                          float(std::sin(x * 0.2) * 3 + ((x * 7919 + y * 104729) % 97) / 97.0)});
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const auto a = static_cast<std::uint32_t>(y * (n + 1) + x), b = a + n + 1;
      p.indices.insert(p.indices.end(), {a, b, a + 1, a + 1, b, b + 1});
    }
  m.primitives.push_back(std::move(p));
  for (const bool cascade : {false, true}) {
    pl::LodOptions o;
    o.cascade = cascade;
    const auto levels = pl::build_lod_chain(m, o);
    ASSERT_GE(levels.size(), 4u);
    for (std::size_t i = 1; i < levels.size(); ++i) {
      const pl::Surface level(levels[i].primitives);
      const double far = pl::deviation(m.primitives, level, 0);
      EXPECT_GT(far, 0.05) << "a rough surface loses something at level " << i;
      EXPECT_GE(levels[i].error, far) << "level " << i << (cascade ? ", cascade" : "");
      EXPECT_LT(levels[i].triangles, levels[i - 1].triangles);
    }
  }
}

TEST(PipelineLod, DistancesToASurfaceAreEuclidean) {
  pl::Primitive tri;
  tri.positions = {0, 0, 0, 10, 0, 0, 0, 10, 0};
  tri.indices = {0, 1, 2};
  const std::vector<pl::Primitive> prims{tri};
  const pl::Surface s(prims);
  EXPECT_DOUBLE_EQ(s.distance({1, 1, 0}), 0);                    // on it
  EXPECT_DOUBLE_EQ(s.distance({1, 1, 5}), 5);                    // above its face
  EXPECT_DOUBLE_EQ(s.distance({-3, -4, 0}), 5);                  // off its corner
  EXPECT_NEAR(s.distance({10, 10, 0}), std::sqrt(50.0), 1e-12);  // off its long edge
  EXPECT_NEAR(s.distance({500, 0, 0}), 490, 1e-9);               // far outside its grid
  EXPECT_EQ(pl::Surface(std::vector<pl::Primitive>{}).distance({0, 0, 0}), INFINITY);
}

// Found by fuzz_model (fuzz/corpus/model/far-from-its-level.gltf): points far from every
// triangle inside a large, mostly empty grid searched cell by cell for minutes. Shells are
// searched within the grid only, and a budget of cells bounds the whole measurement.
TEST(PipelineLod, DistancesFarFromASparseSurfaceAreQuickAndBounded) {
  pl::Primitive two;  // 2,000 tiny triangles near the origin, one far away
  for (std::uint32_t i = 0; i < 2000; ++i) {
    const float x = static_cast<float>(i % 50) * 0.01f, y = static_cast<float>(i / 50) * 0.01f;
    two.positions.insert(two.positions.end(), {x, y, 0, x + 0.005f, y, 0, x, y + 0.005f, 0});
    two.indices.insert(two.indices.end(), {3 * i, 3 * i + 1, 3 * i + 2});
  }
  two.positions.insert(two.positions.end(), {1000, 1000, 1000, 1001, 1000, 1000, 1000, 1001, 1000});
  two.indices.insert(two.indices.end(), {6000, 6001, 6002});
  const std::vector<pl::Primitive> prims{two};
  const pl::Surface s(prims);
  // Between the two, far from both: exact, and found without visiting the empty grid.
  EXPECT_NEAR(s.distance({500, 500, 500}), std::sqrt(3 * 500.0 * 500.0) - 0.5, 1.0);
  std::uint64_t budget = 1'000'000;
  EXPECT_NEAR(s.distance({-100, -100, -100}, &budget), std::sqrt(3 * 100.0 * 100.0), 0.5);
  EXPECT_GT(budget, 0u);
  // Out of budget: a lower bound, never more than the truth.
  std::uint64_t little = 10;
  const double bound = s.distance({500, 500, 500}, &little);
  EXPECT_EQ(little, 0u);
  EXPECT_LE(bound, s.distance({500, 500, 500}));
  std::vector<pl::Primitive> many(1, pl::Primitive{});
  for (int i = 0; i < 1000; ++i) many[0].positions.insert(many[0].positions.end(), {500, 500, 500});
  EXPECT_LE(pl::deviation(many, s, 0, 100), s.distance({500, 500, 500}));
}

// Found by fuzz_model in CI (fuzz/corpus/model/stacked-instances.gltf: 1.2 KB, a small grid
// instanced 4,096 times at one place through a node graph): every cell held thousands of
// triangles, each sample tested them all, and one level's measurement took minutes. The
// budget counts triangles tested, not only cells.
TEST(PipelineLod, TrianglesStackedInACellCountAgainstTheBudget) {
  pl::Primitive stack;
  for (std::uint32_t i = 0; i < 10'000; ++i) {
    stack.positions.insert(stack.positions.end(), {0, 0, 0, 1, 0, 0, 0, 1, 0});
    stack.indices.insert(stack.indices.end(), {3 * i, 3 * i + 1, 3 * i + 2});
  }
  const std::vector<pl::Primitive> prims{stack};
  const pl::Surface s(prims);
  EXPECT_DOUBLE_EQ(s.distance({0.25, 0.25, 2}), 2);
  std::uint64_t budget = 1'000;
  const double bound = s.distance({0.25, 0.25, 2}, &budget);
  EXPECT_EQ(budget, 0u) << "10,000 triangles tested for 1,000 units of work";
  EXPECT_LE(bound, 2.0) << "out of budget: a lower bound";
  std::vector<pl::Primitive> samples(1, pl::Primitive{});
  for (int i = 0; i < 1000; ++i)
    samples[0].positions.insert(samples[0].positions.end(), {0.25f, 0.25f, 2});
  EXPECT_LE(pl::deviation(samples, s, 0, 50'000), 2.0);
}

// Large triangles among many small ones each touched thousands of cells of a grid sized for
// the small ones: the grid is coarsened until it holds a bounded number of entries, and
// distances stay exact.
TEST(PipelineLod, AGridOfLargeAndSmallTrianglesStaysSmallAndExact) {
  pl::Primitive mixed;
  std::uint32_t v = 0;
  for (int i = 0; i < 10'000; ++i) {
    const float x = static_cast<float>(i % 100), y = static_cast<float>(i / 100);
    mixed.positions.insert(mixed.positions.end(), {x, y, 0, x + 0.1f, y, 0, x, y + 0.1f, 0});
    mixed.indices.insert(mixed.indices.end(), {v, v + 1, v + 2});
    v += 3;
  }
  for (int i = 0; i < 100; ++i) {  // each spans the whole extent, tilted through z
    const float z = static_cast<float>(i);
    mixed.positions.insert(mixed.positions.end(), {0, 0, z, 100, 0, 100 - z, 0, 100, z});
    mixed.indices.insert(mixed.indices.end(), {v, v + 1, v + 2});
    v += 3;
  }
  const std::vector<pl::Primitive> prims{mixed};
  const pl::Surface s(prims);
  EXPECT_LE(s.grid_entries(), pl::Surface::kMaxEntriesPerTriangle * 10'100 + 4096);
  const auto brute = [&](const std::array<double, 3>& p) {  // every triangle, one at a time
    double best = INFINITY;
    for (std::size_t t = 0; t < mixed.indices.size(); t += 3) {
      pl::Primitive one;
      for (int k = 0; k < 3; ++k)
        for (int a = 0; a < 3; ++a)
          one.positions.push_back(mixed.positions[mixed.indices[t + k] * 3 + a]);
      one.indices = {0, 1, 2};
      best = std::min(best, pl::Surface(std::vector<pl::Primitive>{one}).distance(p));
    }
    return best;
  };
  for (const std::array<double, 3> p :
       {std::array<double, 3>{50.05, 50.02, 0.5}, {10, 90, 40}, {-20, 30, 7}, {99, 99, 99}})
    EXPECT_NEAR(s.distance(p), brute(p), 1e-9) << p[0] << "," << p[1] << "," << p[2];
}

TEST(PipelineLod, AFlatGridSimplifiesWithoutError) {
  pl::Model m;
  pl::Primitive p;
  const int n = 100;
  for (int y = 0; y <= n; ++y)
    for (int x = 0; x <= n; ++x) p.positions.insert(p.positions.end(), {float(x), float(y), 0.0f});
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const auto a = static_cast<std::uint32_t>(y * (n + 1) + x), b = a + n + 1;
      p.indices.insert(p.indices.end(), {a, b, a + 1, a + 1, b, b + 1});
    }
  m.primitives.push_back(std::move(p));
  const auto levels = pl::build_lod_chain(m, {});
  ASSERT_GE(levels.size(), 2u);
  EXPECT_LT(levels.back().triangles, 1'000u);
  for (const auto& l : levels) EXPECT_LT(l.error, 1e-3) << l.triangles;
}

}  // namespace

namespace {
TEST(PipelineImport, NamesInOtherEncodingsBecomeValidUtf8) {
  // A Latin-1 material name ("Holz" with an e-acute, 0xE9): the GLB's JSON must be UTF-8.
  const std::string obj = "mtllib x.mtl\nusemtl Holz\xE9\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n";
  auto m = pl::import_model(bytes_of(obj), "model.obj", {});
  ASSERT_TRUE(m) << m.error().detail;
  for (const auto& mat : m->materials) EXPECT_EQ(pl::valid_utf8(mat.name), mat.name);
  EXPECT_EQ(pl::valid_utf8("Holz\xE9"), "Holz\xEF\xBF\xBD");
  EXPECT_EQ(pl::valid_utf8("caf\xC3\xA9"), "caf\xC3\xA9");
}
}  // namespace
