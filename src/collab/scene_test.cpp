#include "collab/scene.hpp"

#include "collab/scene_model.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <map>
#include <random>

namespace kiln::collab {
namespace {

std::vector<Op> batch(std::string_view json) {
  std::vector<Op> ops;
  auto e = parse_batch(boost::json::parse(json), 1000, ops);
  EXPECT_FALSE(e) << e.message;
  return ops;
}

Code apply(Scene& s, std::string_view json) {
  return s.apply(batch(json)).code;
}

TEST(Scene, CreateUnderRootAndUnderAnEntity) {
  Scene s;
  EXPECT_EQ(apply(s, R"([{"op":"create","entity":"a","parent":"root","props":{"x":1}}])"),
            Code::Ok);
  EXPECT_EQ(apply(s, R"([{"op":"create","entity":"b","parent":"a","index":"m"}])"), Code::Ok);
  ASSERT_NE(s.find("b"), nullptr);
  EXPECT_EQ(s.find("b")->parent, "a");
  EXPECT_EQ(s.find("b")->index, "m");
  EXPECT_EQ(s.find("a")->props.at("x").as_int64(), 1);
  EXPECT_EQ(s.find("a")->index, "");
  EXPECT_EQ(s.check_invariants(), "");
}

TEST(Scene, ASequenceIsValidatedAsIfAppliedInOrderAndLeavesTheSceneAsItWas) {
  Scene s;
  ASSERT_EQ(apply(s, R"([{"op":"create","entity":"a","parent":"root"}])"), Code::Ok);
  const auto before = boost::json::serialize(s.snapshot());
  const auto b1 = batch(R"([{"op":"create","entity":"b","parent":"a"}])");
  const auto b2 = batch(R"([{"op":"create","entity":"c","parent":"b"}])");     // needs b1
  const auto b3 = batch(R"([{"op":"create","entity":"b","parent":"root"}])");  // b1 made b
  const auto b4 = batch(R"([{"op":"create","entity":"x","parent":"root"},
                             {"op":"create","entity":"y","parent":"nope"}])");
  const auto b5 = batch(R"([{"op":"create","entity":"x","parent":"root"}])");  // b4 undone
  const auto r = s.validate_sequence({&b1, &b2, &b3, &b4, &b5});
  ASSERT_EQ(r.size(), 5u);
  EXPECT_EQ(r[0].code, Code::Ok);
  EXPECT_EQ(r[1].code, Code::Ok) << r[1].message;
  EXPECT_EQ(r[2].code, Code::Exists);
  EXPECT_EQ(r[3].code, Code::NotFound);
  EXPECT_EQ(r[4].code, Code::Ok) << "a refused batch leaves nothing behind for the next";
  EXPECT_EQ(boost::json::serialize(s.snapshot()), before);
  EXPECT_EQ(s.check_invariants(), "");
}

TEST(Scene, CreateRejections) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root"}])");
  EXPECT_EQ(apply(s, R"([{"op":"create","entity":"a","parent":"root"}])"), Code::Exists);
  EXPECT_EQ(apply(s, R"([{"op":"create","entity":"b","parent":"ghost"}])"), Code::NotFound);
  std::vector<Op> ops;
  EXPECT_EQ(parse_batch(boost::json::parse(R"([{"op":"create","entity":"root","parent":"root"}])"),
                        10, ops)
                .code,
            Code::Exists);
}

TEST(Scene, EntityLimitIsTooLarge) {
  Scene s(2);
  EXPECT_EQ(apply(s, R"([{"op":"create","entity":"a","parent":"root"},
                         {"op":"create","entity":"b","parent":"root"}])"),
            Code::Ok);
  EXPECT_EQ(apply(s, R"([{"op":"create","entity":"c","parent":"root"}])"), Code::TooLarge);
}

TEST(Scene, SetAndRemoveProperties) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root"}])");
  EXPECT_EQ(apply(s, R"([{"op":"set","entity":"a","key":"pos","value":[1,2,3]}])"), Code::Ok);
  EXPECT_EQ(boost::json::serialize(s.find("a")->props.at("pos")), "[1,2,3]");
  EXPECT_EQ(apply(s, R"([{"op":"set","entity":"a","key":"pos","value":{"x":1}}])"), Code::Ok);
  EXPECT_EQ(boost::json::serialize(s.find("a")->props.at("pos")), R"({"x":1})");
  EXPECT_EQ(apply(s, R"([{"op":"set","entity":"a","key":"pos","value":null}])"), Code::Ok);
  EXPECT_FALSE(s.find("a")->props.contains("pos"));
  EXPECT_EQ(apply(s, R"([{"op":"set","entity":"ghost","key":"k","value":1}])"), Code::NotFound);
  EXPECT_EQ(apply(s, R"([{"op":"set","entity":"root","key":"k","value":1}])"), Code::Invalid);
}

TEST(Scene, LastWriterWinsInBatchOrder) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root"},
               {"op":"set","entity":"a","key":"k","value":1},
               {"op":"set","entity":"a","key":"k","value":2}])");
  EXPECT_EQ(s.find("a")->props.at("k").as_int64(), 2);
}

TEST(Scene, MoveKeepsOrChangesIndex) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root"},
               {"op":"create","entity":"b","parent":"root","index":"z"}])");
  EXPECT_EQ(apply(s, R"([{"op":"move","entity":"b","parent":"a"}])"), Code::Ok);
  EXPECT_EQ(s.find("b")->parent, "a");
  EXPECT_EQ(s.find("b")->index, "z");
  EXPECT_EQ(apply(s, R"([{"op":"move","entity":"b","parent":"root","index":"c"}])"), Code::Ok);
  EXPECT_EQ(s.find("b")->index, "c");
  EXPECT_EQ(s.check_invariants(), "");
}

TEST(Scene, MoveRejections) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root"},
               {"op":"create","entity":"b","parent":"a"},
               {"op":"create","entity":"c","parent":"b"}])");
  EXPECT_EQ(apply(s, R"([{"op":"move","entity":"a","parent":"a"}])"), Code::Cycle);
  EXPECT_EQ(apply(s, R"([{"op":"move","entity":"a","parent":"c"}])"), Code::Cycle);
  EXPECT_EQ(apply(s, R"([{"op":"move","entity":"ghost","parent":"root"}])"), Code::NotFound);
  EXPECT_EQ(apply(s, R"([{"op":"move","entity":"a","parent":"ghost"}])"), Code::NotFound);
  EXPECT_EQ(apply(s, R"([{"op":"move","entity":"root","parent":"a"}])"), Code::Invalid);
  EXPECT_EQ(s.check_invariants(), "");
}

TEST(Scene, DeleteRemovesTheWholeSubtree) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root"},
               {"op":"create","entity":"b","parent":"a"},
               {"op":"create","entity":"c","parent":"b"},
               {"op":"create","entity":"d","parent":"root"}])");
  EXPECT_EQ(apply(s, R"([{"op":"delete","entity":"a"}])"), Code::Ok);
  EXPECT_EQ(s.size(), 1u);
  EXPECT_TRUE(s.contains("d"));
  EXPECT_FALSE(s.contains("c"));
  EXPECT_EQ(apply(s, R"([{"op":"delete","entity":"a"}])"), Code::NotFound);
  EXPECT_EQ(apply(s, R"([{"op":"delete","entity":"root"}])"), Code::Invalid);
  EXPECT_EQ(s.check_invariants(), "");
}

TEST(Scene, SiblingsSortByIndexThenId) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"z","parent":"root","index":"a"},
               {"op":"create","entity":"y","parent":"root","index":"b"},
               {"op":"create","entity":"x","parent":"root","index":"b"}])");
  EXPECT_EQ(s.children("root"), (std::vector<std::string>{"z", "x", "y"}));
}

TEST(Scene, AFailedBatchChangesNothing) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root","props":{"k":1}},
               {"op":"create","entity":"b","parent":"a"},
               {"op":"create","entity":"c","parent":"root"}])");
  const auto before = s.snapshot();
  std::size_t failed = 99;
  auto ops = batch(R"([{"op":"set","entity":"a","key":"k","value":2},
                       {"op":"set","entity":"a","key":"new","value":true},
                       {"op":"move","entity":"c","parent":"b","index":"q"},
                       {"op":"delete","entity":"a"},
                       {"op":"create","entity":"d","parent":"root"},
                       {"op":"create","entity":"d","parent":"root"}])");
  auto e = s.apply(ops, &failed);
  EXPECT_EQ(e.code, Code::Exists);
  EXPECT_EQ(failed, 5u);
  EXPECT_NE(e.message.find("op 5"), std::string::npos);
  EXPECT_EQ(s.snapshot(), before);
  EXPECT_EQ(s.children("a"), std::vector<std::string>{"b"});
  EXPECT_EQ(s.check_invariants(), "");
}

TEST(Scene, ValidateChangesNothing) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root"}])");
  const auto before = s.snapshot();
  EXPECT_FALSE(s.validate(batch(R"([{"op":"create","entity":"b","parent":"a"},
                                     {"op":"delete","entity":"a"}])")));
  EXPECT_EQ(s.snapshot(), before);
  EXPECT_EQ(s.validate(batch(R"([{"op":"create","entity":"a","parent":"root"}])")).code,
            Code::Exists);
  EXPECT_EQ(s.snapshot(), before);
}

TEST(Scene, SnapshotRoundTrips) {
  Scene s;
  apply(s, R"([{"op":"create","entity":"a","parent":"root","index":"1","props":{"n":"x"}},
               {"op":"create","entity":"b","parent":"a"}])");
  Scene t;
  ASSERT_FALSE(Scene::from_snapshot(s.snapshot(), t));
  EXPECT_EQ(boost::json::serialize(t.snapshot()), boost::json::serialize(s.snapshot()));
  EXPECT_EQ(t.children("a"), std::vector<std::string>{"b"});
}

TEST(Scene, SnapshotsThatBreakTheTreeAreRefused) {
  Scene t;
  EXPECT_EQ(Scene::from_snapshot(boost::json::parse(R"({"entities":{
      "a":{"parent":"b","index":"","props":{}},
      "b":{"parent":"a","index":"","props":{}}}})"),
                                 t)
                .code,
            Code::Invalid);
  EXPECT_EQ(Scene::from_snapshot(boost::json::parse(R"({"entities":{
      "a":{"parent":"ghost","index":"","props":{}}}})"),
                                 t)
                .code,
            Code::Invalid);
  EXPECT_EQ(Scene::from_snapshot(boost::json::parse(R"({"entities":[]})"), t).code, Code::Invalid);
}

TEST(Ops, StructuralValidation) {
  std::vector<Op> ops;
  auto code = [&](std::string_view j) { return parse_batch(boost::json::parse(j), 3, ops).code; };
  EXPECT_EQ(code(R"([])"), Code::Invalid);
  EXPECT_EQ(code(R"({})"), Code::Invalid);
  EXPECT_EQ(code(R"([1])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"explode","entity":"a"}])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"create","entity":"a b","parent":"root"}])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"create","entity":"a","parent":"root","parnet":"x"}])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"create","entity":"a","parent":"root","props":[]}])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"create","entity":"a","parent":"root","index":5}])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"set","entity":"a","key":"","value":1}])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"set","entity":"a","key":"k"}])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"delete"}])"), Code::Invalid);
  EXPECT_EQ(code(R"([{"op":"delete","entity":"a"},{"op":"delete","entity":"b"},
                     {"op":"delete","entity":"c"},{"op":"delete","entity":"d"}])"),
            Code::TooLarge);
  EXPECT_TRUE(valid_id(std::string(64, 'a')));
  EXPECT_FALSE(valid_id(std::string(65, 'a')));
  EXPECT_FALSE(valid_id("é"));
  EXPECT_EQ(
      code(R"([{"op":"set","entity":"a","key":")" + std::string(129, 'k') + R"(","value":1}])"),
      Code::Invalid);
}

// Property test: random batches (many of them invalid) checked against a reference model
// (scene_model.hpp) that states the rules directly. Every batch must end with the model's
// code; after it the scene's snapshot and every sibling order must equal the model's, and
// the tree must stay valid. A `set` that wrote nothing, a `move` that kept the old parent, a
// delete that left a grandchild, a refused batch that changed anything: each is a mismatch.
class SceneProperty : public ::testing::Test {
 protected:
  std::mt19937 rng{12345};
  const std::vector<std::string> ids = {"a", "b", "c", "d", "e", "f", "g", "h", "root"};
  static constexpr std::size_t kMaxEntities = 4;  // small, so creates also hit too_large

  std::string pick(const std::vector<std::string>& v) { return v[rng() % v.size()]; }

  std::vector<Op> random_batch(const Scene& s, int round) {
    std::vector<Op> ops;
    const int n = 1 + static_cast<int>(rng() % 3);
    std::vector<std::string> existing;
    for (const auto& id : ids) {
      if (id != "root" && s.contains(id)) existing.push_back(id);
    }
    std::vector<std::string> parents = existing;
    parents.push_back("root");
    for (int i = 0; i < n; ++i) {
      Op op;
      const auto kind = rng() % 4;
      // Mostly name entities that exist, so that enough batches are accepted.
      op.entity = (kind != 0 && !existing.empty() && rng() % 5 != 0) ? pick(existing) : pick(ids);
      switch (kind) {
        case 0:
          op.kind = Op::Kind::Create;
          op.parent = rng() % 5 != 0 ? pick(parents) : pick(ids);
          if (rng() % 4 != 0) op.index = std::to_string(rng() % 3);
          if (rng() % 2) op.props["k" + std::to_string(rng() % 2)] = round;
          break;
        case 1:
          op.kind = Op::Kind::Set;
          op.key = "k" + std::to_string(rng() % 2);
          switch (rng() % 4) {
            case 0:
              op.value = nullptr;
              break;
            case 1:
              op.value = boost::json::object{{"x", round}, {"y", "s"}};
              break;
            default:
              op.value = round;
          }
          break;
        case 2:
          op.kind = Op::Kind::Move;
          op.parent = rng() % 5 != 0 ? pick(parents) : pick(ids);
          if (rng() % 2) op.index = std::to_string(rng() % 3);
          break;
        default:
          op.kind = Op::Kind::Delete;
      }
      ops.push_back(op);
    }
    return ops;
  }

  static std::string describe(const std::vector<Op>& ops) {
    boost::json::array a;
    for (const auto& op : ops) a.push_back(to_json(op));
    return boost::json::serialize(a);
  }

  static void expect_same(const Scene& s, const model::SceneModel& m, int round) {
    ASSERT_EQ(s.snapshot(), m.snapshot()) << "round " << round;
    ASSERT_EQ(s.size(), m.entities().size()) << "round " << round;
    ASSERT_EQ(s.children("root"), m.children("root")) << "round " << round;
    for (const auto& [id, e] : m.entities()) {
      ASSERT_EQ(s.children(id), m.children(id)) << "round " << round << " children of " << id;
    }
    ASSERT_EQ(s.check_invariants(), "") << "round " << round;
  }
};

TEST_F(SceneProperty, RandomBatchesAgreeWithTheReferenceModel) {
  Scene s(kMaxEntities);
  model::SceneModel m(kMaxEntities);
  std::map<Code, int> codes;
  for (int round = 0; round < 4000; ++round) {
    const auto ops = random_batch(s, round);
    const auto got = s.apply(ops).code;
    const auto want = m.apply(ops);
    ASSERT_EQ(to_string(got), to_string(want)) << "round " << round << ": " << describe(ops);
    ++codes[got];
    expect_same(s, m, round);
    if (HasFatalFailure()) return;
  }
  // The generator must reach every outcome for the test to mean anything.
  EXPECT_GT(codes[Code::Ok], 500);
  for (auto c : {Code::NotFound, Code::Exists, Code::Cycle, Code::Invalid, Code::TooLarge}) {
    EXPECT_GT(codes[c], 20) << to_string(c);
  }
}

// validate() and validate_sequence() decide as apply() would and change nothing.
TEST_F(SceneProperty, ValidationAgreesWithTheModelAndChangesNothing) {
  Scene s(kMaxEntities);
  model::SceneModel m(kMaxEntities);
  int accepted_in_sequences = 0;
  for (int round = 0; round < 1500; ++round) {
    std::vector<std::vector<Op>> batches;
    for (int b = 0; b < 3; ++b) batches.push_back(random_batch(s, round));
    std::vector<const std::vector<Op>*> ptrs;
    for (const auto& b : batches) ptrs.push_back(&b);
    const auto before = s.snapshot();

    ASSERT_EQ(to_string(s.validate(batches[0]).code),
              to_string(model::SceneModel(m).apply(batches[0])))
        << "round " << round;
    ASSERT_EQ(s.snapshot(), before) << "round " << round;

    auto trial = m;  // the model applies the sequence; refused batches are skipped
    const auto results = s.validate_sequence(ptrs);
    ASSERT_EQ(results.size(), batches.size());
    for (std::size_t b = 0; b < batches.size(); ++b) {
      const auto want = trial.apply(batches[b]);
      ASSERT_EQ(to_string(results[b].code), to_string(want)) << "round " << round << " batch " << b;
      if (want == Code::Ok) ++accepted_in_sequences;
    }
    ASSERT_EQ(s.snapshot(), before) << "round " << round;

    // Then move on: apply the first batch for real, so the scene keeps changing.
    ASSERT_EQ(to_string(s.apply(batches[0]).code), to_string(m.apply(batches[0])));
    expect_same(s, m, round);
    if (HasFatalFailure()) return;
  }
  EXPECT_GT(accepted_in_sequences, 300);
}

}  // namespace
}  // namespace kiln::collab
