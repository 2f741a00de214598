#include "assets/pipeline/lod_selection.hpp"

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <cmath>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>

namespace lod = kiln::assets::lod;
namespace json = boost::json;

namespace {

lod::Vec3 vec(const json::value& v) {
  const auto& a = v.as_array();
  return {a.at(0).to_number<double>(), a.at(1).to_number<double>(), a.at(2).to_number<double>()};
}

// The shared vectors (tests/fixtures/lod_selection/cases.json): the TypeScript SDK checks
// the same file, so both implementations agree on every case.
TEST(LodSelection, AgreesWithTheSharedVectors) {
  std::ifstream in(std::string(KILN_LOD_FIXTURES) + "/cases.json");
  ASSERT_TRUE(in) << "missing fixture file";
  std::stringstream ss;
  ss << in.rdbuf();
  const auto doc = json::parse(ss.str());
  const auto& cases = doc.at("cases").as_array();
  ASSERT_GE(cases.size(), 5u);
  for (const auto& c : cases) {
    const auto name = std::string(c.at("name").as_string());
    SCOPED_TRACE(name);
    const auto& cam = c.at("camera").as_object();
    lod::Camera camera;
    camera.position = vec(cam.at("position"));
    camera.direction = vec(cam.at("direction"));
    camera.fovy = cam.at("fovy").to_number<double>();
    camera.viewport_width = cam.at("viewport").as_array().at(0).to_number<double>();
    camera.viewport_height = cam.at("viewport").as_array().at(1).to_number<double>();
    camera.near = cam.at("near").to_number<double>();
    const auto& o = c.at("options").as_object();
    lod::Options options;
    options.max_screen_space_error = o.at("max_screen_space_error").to_number<double>();
    options.hysteresis = o.at("hysteresis").to_number<double>();
    options.memory_budget_bytes = o.at("memory_budget_bytes").to_number<std::uint64_t>();

    std::vector<std::vector<lod::Level>> levels;
    std::vector<lod::Entity> entities;
    for (const auto& e : c.at("entities").as_array()) {
      auto& ls = levels.emplace_back();
      for (const auto& l : e.at("levels").as_array())
        ls.push_back({l.as_array().at(0).to_number<double>(),
                      l.as_array().at(1).to_number<std::uint64_t>()});
    }
    std::size_t i = 0;
    for (const auto& e : c.at("entities").as_array()) {
      const auto& eo = e.as_object();
      lod::Entity ent;
      ent.bounds = {vec(eo.at("center")), eo.at("radius").to_number<double>()};
      if (eo.contains("scale")) ent.scale = eo.at("scale").to_number<double>();
      if (eo.contains("loaded")) ent.loaded = static_cast<int>(eo.at("loaded").to_number<int>());
      ent.levels = levels[i++];
      entities.push_back(ent);
    }
    const auto s = lod::select(camera, entities, options);
    const auto& want = c.at("expect").as_object();
    std::vector<int> want_level;
    for (const auto& v : want.at("level").as_array()) want_level.push_back(v.to_number<int>());
    std::vector<std::uint32_t> want_order;
    for (const auto& v : want.at("order").as_array())
      want_order.push_back(v.to_number<std::uint32_t>());
    EXPECT_EQ(s.level, want_level);
    EXPECT_EQ(s.order, want_order);
    EXPECT_EQ(s.bytes, want.at("bytes").to_number<std::uint64_t>());
    EXPECT_EQ(s.over_budget, want.at("over_budget").as_bool());
  }
}

TEST(LodSelection, ScreenSpaceErrorIsCesiumsFormula) {
  lod::Camera c;
  c.fovy = 1.0;
  c.viewport_height = 900;
  const double want = 0.5 * 900 / (40 * 2 * std::tan(0.5));
  EXPECT_NEAR(lod::screen_space_error(c, 0.5, 40), want, 1e-9);
  // Closer than `near` counts as `near`: a camera inside an object asks for its finest level.
  EXPECT_DOUBLE_EQ(lod::screen_space_error(c, 0.5, -3), lod::screen_space_error(c, 0.5, c.near));
}

const std::vector<lod::Level> kChain = {
    {0.001, 4'000'000}, {0.01, 1'000'000}, {0.1, 250'000}, {1, 60'000}, {10, 15'000}};

lod::Entity at_distance(double d, int loaded = -1) {
  lod::Entity e;
  e.bounds = {{0, 0, -(d + 1)}, 1};
  e.levels = kChain;
  e.loaded = loaded;
  return e;
}

// Farther never means finer (without a loaded level, and within the budget).
TEST(LodSelection, AFartherEntityNeverGetsAFinerLevel) {
  lod::Camera cam;
  int last = 0;
  for (double d = 0.01; d < 1e6; d *= 1.07) {
    const lod::Entity e = at_distance(d);
    const auto s = lod::select(cam, std::span(&e, 1));
    ASSERT_GE(s.level[0], last) << "at distance " << d;
    last = s.level[0];
  }
  EXPECT_EQ(last, static_cast<int>(kChain.size()) - 1);
}

// A camera going back and forth across a threshold (within the band) keeps the level it
// loaded; without hysteresis the same walk flips the level every step.
TEST(LodSelection, HysteresisStopsFlickerAcrossAThreshold) {
  lod::Camera cam;
  const double k = cam.viewport_height / (2 * std::tan(cam.fovy / 2));
  // The distance where level 3 (error 1) shows exactly 16 px.
  const double edge = 1 * k / 16;
  for (double h : {0.0, 0.2}) {
    lod::Options opt;
    opt.hysteresis = h;
    int loaded = -1, changes = 0;
    for (int step = 0; step < 40; ++step) {
      const double d = edge * (step % 2 == 0 ? 0.95 : 1.05);
      const lod::Entity e = at_distance(d, loaded);
      const auto s = lod::select(cam, std::span(&e, 1), opt);
      if (loaded >= 0 && s.level[0] != loaded) ++changes;
      loaded = s.level[0];
    }
    if (h == 0.0)
      EXPECT_EQ(changes, 39);
    else
      EXPECT_LE(changes, 1);
  }
}

// Many entities at random places: the selection stays within the budget whenever the
// coarsest levels fit, and the download order lists exactly the entities that need a level.
TEST(LodSelection, StaysWithinTheBudgetAndOrdersEveryDownload) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> pos(-500, 500), rad(0.1, 20);
  std::vector<lod::Entity> es(5'000);
  for (auto& e : es) {
    e.bounds = {{pos(rng), pos(rng), pos(rng)}, rad(rng)};
    e.levels = kChain;
    e.loaded = static_cast<int>(rng() % 7) - 1;  // -1..5: 5 is out of range, means none
  }
  lod::Camera cam;
  cam.position = {0, 0, 0};
  cam.direction = {1, 0.2, -1};
  for (std::uint64_t budget :
       {std::uint64_t{100'000'000}, std::uint64_t{1'000'000'000}, std::uint64_t{76'000'000}}) {
    lod::Options opt;
    opt.memory_budget_bytes = budget;
    const auto s = lod::select(cam, es, opt);
    EXPECT_LE(s.bytes, budget);
    std::uint64_t sum = 0;
    std::vector<std::uint32_t> need;
    for (std::size_t i = 0; i < es.size(); ++i) {
      ASSERT_GE(s.level[i], 0) << "the coarsest levels fit, so every entity has one";
      sum += kChain[s.level[i]].bytes;
      if (s.level[i] != es[i].loaded) need.push_back(static_cast<std::uint32_t>(i));
    }
    EXPECT_EQ(sum, s.bytes);
    auto order = s.order;
    std::sort(order.begin(), order.end());
    EXPECT_EQ(order, need);
  }
}

TEST(LodSelection, BrokenInputIsShownCoarseNotTrusted) {
  lod::Camera cam;
  lod::Entity e = at_distance(1);
  e.bounds.center.x = std::numeric_limits<double>::quiet_NaN();
  lod::Entity f = at_distance(1);
  f.scale = -3;  // not a scale: counts as 1
  f.bounds.radius = std::numeric_limits<double>::infinity();
  const lod::Entity g = at_distance(1);
  lod::Entity h = at_distance(2);
  h.levels = {};
  const std::vector<lod::Entity> es = {e, f, g, h};
  const auto s = lod::select(cam, es);
  EXPECT_EQ(s.level[0], static_cast<int>(kChain.size()) - 1);
  EXPECT_EQ(s.level[1], static_cast<int>(kChain.size()) - 1);
  EXPECT_EQ(s.level[2], lod::select(cam, std::span(&g, 1)).level[0]);
  EXPECT_EQ(s.level[3], -1);
  // The broken ones download after the healthy one.
  ASSERT_EQ(s.order.size(), 3u);
  EXPECT_EQ(s.order[0], 2u);
}

// A Selector reused every frame allocates nothing once warm: its buffers keep their storage.
TEST(LodSelection, AReusedSelectorKeepsItsBuffers) {
  std::vector<lod::Entity> es;
  for (int i = 0; i < 1'000; ++i) es.push_back(at_distance(i * 0.5));
  lod::Selector sel;
  lod::Selection out;
  lod::Options opt;
  opt.memory_budget_bytes = 50'000'000;  // over budget: the ranking runs too
  sel.select({}, es, opt, out);
  const auto* level = out.level.data();
  const auto* order = out.order.data();
  for (int frame = 0; frame < 5; ++frame) {
    sel.select({}, es, opt, out);
    EXPECT_EQ(out.level.data(), level);
    EXPECT_EQ(out.order.data(), order);
  }
  EXPECT_TRUE(out.over_budget);
}

}  // namespace
