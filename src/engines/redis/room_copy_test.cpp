// The Redis engine's pure parts: the messages on a room's channel, a room rebuilt from a
// load script's reply, and a node's copy of a room (arrival order, gaps, held batches, the
// submit queue's group commit). No Redis here.
#include "engines/redis/room_copy.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace kiln::engines {
namespace {

namespace json = boost::json;
using redis::Reply;

std::vector<collab::Op> ops(std::string_view j) {
  std::vector<collab::Op> out;
  EXPECT_FALSE(collab::parse_batch(json::parse(j), 1000, out));
  return out;
}

OpsMessage msg(std::uint64_t seq, std::string_view ops_json, std::string user = "ann") {
  json::array arr = json::parse(ops_json).as_array();
  return OpsMessage{seq, user, "s-" + user, static_cast<std::int64_t>(seq),
                    collab::encode::ops("p/r", seq, user, arr)};
}

std::string create(std::string_view id) {
  return R"([{"op":"create","entity":")" + std::string(id) + R"(","parent":"root"}])";
}

Reply str(std::string s) {
  Reply r;
  r.type = Reply::Type::String;
  r.str = std::move(s);
  return r;
}

Reply arr(std::vector<Reply> e) {
  Reply r;
  r.type = Reply::Type::Array;
  r.elements = std::move(e);
  return r;
}

// One XRANGE entry: [id, ["m", message]].
Reply entry(const OpsMessage& m) {
  return arr({str(std::to_string(m.seq) + "-0"), arr({str("m"), str(encode_ops(m))})});
}

TEST(RedisMessages, OpsMessagesRoundTripAndGarbageIsRefused) {
  auto m = msg(42, create("a"));
  auto back = decode_ops(encode_ops(m));
  ASSERT_TRUE(back);
  EXPECT_EQ(back->seq, 42u);
  EXPECT_EQ(back->user, "ann");
  EXPECT_EQ(back->session, "s-ann");
  EXPECT_EQ(back->request_id, 42);
  EXPECT_EQ(back->frame, m.frame);
  EXPECT_FALSE(decode_ops("e\n{}"));
  EXPECT_FALSE(decode_ops("o\n1\nann\n"));
  std::vector<collab::Op> out;
  EXPECT_TRUE(collab::parse_ops_frame(m.frame, out));
  EXPECT_EQ(out.size(), 1u);
  EXPECT_FALSE(collab::parse_ops_frame("{\"t\":\"ops\"}", out));
}

TEST(RedisMessages, ARoomIsRebuiltFromItsSnapshotAndTheLogAfterIt) {
  // Snapshot at seq 2 holds a and b; the log holds 1..4; 3 and 4 apply on top.
  const auto snap = R"({"entities":{"a":{"parent":"root","index":"","props":{}},)"
                    R"("b":{"parent":"root","index":"","props":{}}}})";
  Reply r = arr({str("ep"), str("4"), str("2"), str(snap),
                 arr({entry(msg(1, create("a"))), entry(msg(2, create("b"))),
                      entry(msg(3, create("c"))), entry(msg(4, create("d")))})});
  auto rb = rebuild(r, 100, 10);
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->epoch, "ep");
  EXPECT_EQ(rb->seq, 4u);
  EXPECT_TRUE(rb->scene.contains("d"));
  EXPECT_EQ(rb->log.size(), 4u) << "the resume window holds the frames before the snapshot too";
  auto small = rebuild(r, 100, 3);
  EXPECT_EQ(small->log.size(), 3u);
  // A gap in the log: rebuilt up to it.
  Reply gap = arr({str("ep"), str("5"), str("0"), str(""),
                   arr({entry(msg(1, create("a"))), entry(msg(3, create("c")))})});
  EXPECT_EQ(rebuild(gap, 100, 10)->seq, 1u);
  EXPECT_FALSE(rebuild(arr({str("ep"), str("1"), str("1"), str("{not json"), arr({})}), 100, 10));
  EXPECT_FALSE(rebuild(arr({str("absent")}), 100, 10));
}

class RoomCopyTest : public ::testing::Test {
 protected:
  RoomCopy copy{"p/r", 100, 10};
  std::vector<std::uint64_t> delivered;
  RoomCopy::Applied record = [this](const collab::OpsEvent& e) { delivered.push_back(e.seq); };

  Submission sub(std::string author, std::int64_t id, std::string_view j,
                 std::vector<std::string>* refusals = nullptr) {
    return Submission{collab::Member{"s-" + author, author, author, "n"}, id,
                      std::make_shared<std::vector<collab::Op>>(ops(j)),
                      [refusals](collab::Error e) {
                        if (refusals) refusals->push_back(e.message);
                      }};
  }
};

TEST_F(RoomCopyTest, MessagesApplyInSeqOrderWhateverOrderTheyArrive) {
  EXPECT_EQ(copy.receive(msg(2, create("b")), true, record), RoomCopy::Arrival::Buffered);
  EXPECT_TRUE(copy.gap());
  EXPECT_EQ(copy.receive(msg(3, create("c")), true, record), RoomCopy::Arrival::Buffered);
  EXPECT_EQ(copy.receive(msg(1, create("a")), true, record), RoomCopy::Arrival::Applied);
  EXPECT_EQ(delivered, (std::vector<std::uint64_t>{1, 2, 3}));
  EXPECT_FALSE(copy.gap());
  EXPECT_EQ(copy.receive(msg(2, create("b")), true, record), RoomCopy::Arrival::Duplicate);
  EXPECT_EQ(copy.seq(), 3u);
}

TEST_F(RoomCopyTest, WhileLoadingEverythingWaitsThenDrains) {
  EXPECT_EQ(copy.receive(msg(6, create("f")), false, record), RoomCopy::Arrival::Buffered);
  Rebuilt rb{collab::Scene(100), "ep", 5, {}};
  copy.reset(std::move(rb));
  EXPECT_TRUE(copy.drain(record));
  EXPECT_EQ(delivered, (std::vector<std::uint64_t>{6}));
  EXPECT_EQ(copy.epoch(), "ep");
}

TEST_F(RoomCopyTest, HeldBatchesWaitForTheirRelease) {
  copy.hold(1);
  EXPECT_EQ(copy.receive(msg(1, create("a")), true, record), RoomCopy::Arrival::Buffered);
  EXPECT_TRUE(delivered.empty());
  EXPECT_TRUE(copy.release(1, 1));
  EXPECT_TRUE(copy.drain(record));
  EXPECT_EQ(delivered, (std::vector<std::uint64_t>{1}));
}

TEST_F(RoomCopyTest, ABatchThatDoesNotApplyBreaksTheCopy) {
  EXPECT_EQ(
      copy.receive(msg(1, R"([{"op":"set","entity":"ghost","key":"k","value":1}])"), true, record),
      RoomCopy::Arrival::Broken);
}

TEST_F(RoomCopyTest, AGroupIsValidatedInOrderAndKeepsTheOrderWhenRequeued) {
  std::vector<std::string> refusals;
  ASSERT_TRUE(copy.enqueue(sub("ann", 1, create("a")), 10));
  ASSERT_TRUE(copy.enqueue(sub("bob", 2, R"([{"op":"create","entity":"b","parent":"a"}])"), 10));
  ASSERT_TRUE(copy.enqueue(sub("ann", 3, create("a"), &refusals), 10));  // exists after #1
  ASSERT_TRUE(copy.enqueue(sub("ann", 4, create("c")), 10));
  EXPECT_FALSE(copy.enqueue(sub("ann", 5, create("z")), 4)) << "the queue's bound";
  ASSERT_TRUE(copy.may_send());
  auto g = copy.take_group(256);
  ASSERT_EQ(g.batches.size(), 3u);
  ASSERT_EQ(g.refused.size(), 1u);
  EXPECT_EQ(g.refused[0].first.request_id, 3);
  EXPECT_EQ(g.refused[0].second.code, collab::Code::Exists);
  ASSERT_EQ(g.messages.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(decode_ops(g.messages[i])->seq, i + 1);
  EXPECT_EQ(decode_ops(g.messages[2])->request_id, 4);
  EXPECT_EQ(copy.scene().size(), 0u) << "validation leaves the copy as it was";
  // Another node appended first: the group goes back, in order, ahead of later batches.
  ASSERT_TRUE(copy.enqueue(sub("ann", 6, create("d")), 10));
  copy.requeue(std::move(g.batches));
  copy.wait_for(1);
  EXPECT_FALSE(copy.may_send()) << "not before the copy has caught up";
  EXPECT_EQ(copy.receive(msg(1, create("x"), "eve"), true, record), RoomCopy::Arrival::Applied);
  ASSERT_TRUE(copy.may_send());
  auto again = copy.take_group(2);
  ASSERT_EQ(again.batches.size(), 2u);
  EXPECT_EQ(again.batches[0].request_id, 1);
  EXPECT_EQ(again.batches[1].request_id, 2);
  EXPECT_EQ(decode_ops(again.messages[0])->seq, 2u) << "seqs follow the copy's";
  EXPECT_EQ(copy.queued(), 2u);
}

TEST_F(RoomCopyTest, AJoinerGetsTheMissedFramesOrTheSnapshot) {
  Rebuilt rb{collab::Scene(100), "ep", 0, {}};
  copy.reset(std::move(rb));
  for (std::uint64_t s = 1; s <= 12; ++s)
    copy.receive(msg(s, create("e" + std::to_string(s))), true, record);
  auto r = copy.answer(collab::Since{"ep", 9});
  EXPECT_TRUE(r.recovered);
  EXPECT_EQ(r.ops.size(), 3u);
  EXPECT_FALSE(copy.answer(collab::Since{"ep", 1}).recovered) << "older than the window (10)";
  EXPECT_FALSE(copy.answer(collab::Since{"other", 9}).recovered);
  EXPECT_FALSE(copy.answer(collab::Since{"ep", 13}).recovered) << "a seq not reached";
  auto fresh = copy.answer(std::nullopt);
  ASSERT_TRUE(fresh.snapshot);
  EXPECT_EQ(fresh.snapshot->at("entities").as_object().size(), 12u);
}

}  // namespace
}  // namespace kiln::engines
