#include "assets/scene_stream.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

#include <cmath>

namespace kiln::assets {
namespace {

ScenePlacement place(const char* text) {
  return place_entities(boost::json::parse(text).as_object());
}

std::array<double, 3> apply(const Matrix& m, double x, double y, double z) {
  return {m[0] * x + m[4] * y + m[8] * z + m[12], m[1] * x + m[5] * y + m[9] * z + m[13],
          m[2] * x + m[6] * y + m[10] * z + m[14]};
}

TEST(SceneStream, PlacesEntitiesThatShowAssetsAlongTheirParents) {
  const auto p = place(R"({"entities": {
    "room":  {"parent": "root", "index": "", "props": {"position": [10, 0, 0], "scale": 2}},
    "table": {"parent": "room", "index": "", "props": {"asset": "a1", "position": [1, 0, 0]}},
    "lamp":  {"parent": "table", "index": "", "props": {"asset": "a2",
              "rotation": [0, 0.7071067811865476, 0, 0.7071067811865476], "scale": [1, 3, 1]}},
    "note":  {"parent": "root", "index": "", "props": {"text": "no asset"}}}})");
  ASSERT_EQ(p.entities.size(), 2u);
  EXPECT_TRUE(p.skipped.empty());
  const auto& lamp = p.entities[0];  // by id: lamp, table
  const auto& table = p.entities[1];
  EXPECT_EQ(table.asset, "a1");
  // The room's scale applies to the table's offset: 10 + 2 * 1.
  const auto t0 = apply(table.world, 0, 0, 0);
  EXPECT_NEAR(t0[0], 12, 1e-9);
  EXPECT_NEAR(table.max_scale, 2, 1e-9);
  // The lamp turns 90 degrees about y: +x goes to -z, and the room's scale doubles it.
  const auto l1 = apply(lamp.world, 1, 0, 0);
  EXPECT_NEAR(l1[0], 12, 1e-9);
  EXPECT_NEAR(l1[2], -2, 1e-9);
  EXPECT_NEAR(lamp.max_scale, 6, 1e-9);  // 2 (room) * 3 (its own y)
  const auto s = world_sphere(lamp.world, lamp.max_scale, {0, 1, 0}, 0.5);
  EXPECT_NEAR(s[1], 6, 1e-9);  // y 1 scaled by 3, then 2
  EXPECT_NEAR(s[3], 3, 1e-9);
}

TEST(SceneStream, MalformedTransformsAreSkippedWithTheirReason) {
  const auto p = place(R"({"entities": {
    "a": {"parent": "root", "index": "", "props": {"asset": "x", "position": [1, 2]}},
    "b": {"parent": "root", "index": "", "props": {"position": "here"}},
    "c": {"parent": "b", "index": "", "props": {"asset": "x"}},
    "d": {"parent": "root", "index": "", "props": {"asset": 7}},
    "e": {"parent": "root", "index": "", "props": {"asset": "x", "rotation": [0, 0, 0, 0]}},
    "f": {"parent": "ghost", "index": "", "props": {"asset": "x"}},
    "g": {"parent": "root", "index": "", "props": {"asset": "x", "scale": [1, "big", 1]}}}})");
  EXPECT_TRUE(p.entities.empty());
  ASSERT_EQ(p.skipped.size(), 6u);
  EXPECT_EQ(p.skipped[0].id, "a");
  EXPECT_NE(p.skipped[0].why.find("position"), std::string::npos);
  EXPECT_EQ(p.skipped[1].id, "c");
  EXPECT_NE(p.skipped[1].why.find("ancestor 'b'"), std::string::npos) << p.skipped[1].why;
  EXPECT_EQ(p.skipped[2].id, "d");
  EXPECT_NE(p.skipped[3].why.find("zero quaternion"), std::string::npos);
  EXPECT_NE(p.skipped[4].why.find("'ghost' is missing"), std::string::npos);
  EXPECT_NE(p.skipped[5].why.find("scale"), std::string::npos);
}

TEST(SceneStream, TransformsThatOverflowAreSkippedNotPlacedAtInfinity) {
  const auto p = place(R"({"entities": {
    "g": {"parent": "root", "index": "", "props": {"scale": 1e200}},
    "a": {"parent": "g", "index": "", "props": {"asset": "x", "scale": 1e200}},
    "b": {"parent": "root", "index": "", "props": {"asset": "x", "position": [1e300, 0, 0], "scale": 1e300}}}})");
  EXPECT_TRUE(p.entities.empty());
  ASSERT_EQ(p.skipped.size(), 2u);
  for (const auto& s : p.skipped) EXPECT_NE(s.why.find("overflows"), std::string::npos) << s.why;
}

TEST(SceneStream, RotationsAreNormalisedWithoutOverflowOrUnderflow) {
  const auto p = place(R"({"entities": {
    "big": {"parent": "root", "index": "", "props": {"asset": "x", "rotation": [1e308, 1e308, 0, 0]}},
    "tiny": {"parent": "root", "index": "", "props": {"asset": "x", "rotation": [0, 1e-300, 0, 1e-300]}}}})");
  ASSERT_EQ(p.entities.size(), 2u) << (p.skipped.empty() ? "" : p.skipped[0].why);
  // [1, 1, 0, 0] normalised: 180 degrees about (1, 1, 0): +x goes to +y.
  const auto x = apply(p.entities[0].world, 1, 0, 0);
  EXPECT_NEAR(x[1], 1, 1e-9);
  // [0, 1, 0, 1] normalised: 90 degrees about y: +x goes to -z.
  const auto t = apply(p.entities[1].world, 1, 0, 0);
  EXPECT_NEAR(t[2], -1, 1e-9);
}

TEST(SceneStream, ABrokenSnapshotWithACycleEndsWithAReason) {
  const auto p = place(R"({"entities": {
    "a": {"parent": "b", "index": "", "props": {"asset": "x"}},
    "b": {"parent": "a", "index": "", "props": {}}}})");
  ASSERT_EQ(p.skipped.size(), 1u);
  EXPECT_NE(p.skipped[0].why.find("cycle"), std::string::npos);
  EXPECT_TRUE(place(R"({"nothing": 1})").entities.empty());
}

}  // namespace
}  // namespace kiln::assets
