// The hub and the in-memory engine beyond the conformance suite (engine_conformance.hpp):
// coalescing details, ghost entries, sequence checks.
#include "collab/hub.hpp"
#include "collab/test_recorder.hpp"
#include "engines/memory/memory_engine.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

namespace kiln::collab {
namespace {

namespace json = boost::json;

using conformance::Recorder;  // the suite's recording subscriber

std::vector<Op> ops(std::string_view j) {
  std::vector<Op> out;
  EXPECT_FALSE(parse_batch(json::parse(j), 1000, out));
  return out;
}

// The engine and its batch log: what the interaction promises. A log that holds every
// callback until the test says "durable" stands in for the disk.
struct HeldLog : BatchLog {
  std::vector<LoggedBatch> appended;
  std::vector<std::function<void()>> waiting;
  Error refuse;  // when set, appends are refused
  Error append(LoggedBatch b, std::function<void()> on_durable) override {
    if (refuse) return refuse;
    appended.push_back(std::move(b));
    waiting.push_back(std::move(on_durable));
    return {};
  }
  void after_durable(std::function<void()> fn) override { waiting.push_back(std::move(fn)); }
  void stored(const std::string&, std::uint64_t) override {}
  void flush() {
    auto w = std::move(waiting);
    waiting.clear();
    for (auto& fn : w) {
      if (fn) fn();
    }
  }
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    engine = std::make_unique<engines::MemoryRoomEngine>(
        limits, [n]() mutable { return "epoch" + std::to_string(++n); });
    engine->set_events(&hub);
  }

  // Joins through the engine and registers in the hub, as a session does.
  JoinResult join(const std::string& room, const Member& m, std::shared_ptr<Recorder> rec,
                  std::optional<Since> since = std::nullopt) {
    JoinResult out;
    engine->join(room, m, since, [&](JoinResult r) {
      if (!r.error) hub.add(room, m, rec, r.seq);
      out = std::move(r);
    });
    return out;
  }

  // The same with a held log: answered once the log says durable.
  JoinResult join_durable(HeldLog& log, const std::string& room, const Member& m,
                          std::shared_ptr<Recorder> rec,
                          std::optional<Since> since = std::nullopt) {
    JoinResult out;
    bool answered = false;
    engine->join(room, m, since, [&](JoinResult r) {
      if (!r.error) hub.add(room, m, rec, r.seq);
      out = std::move(r);
      answered = true;
    });
    EXPECT_FALSE(answered) << "a join is answered only once the log is durable";
    log.flush();
    EXPECT_TRUE(answered);
    return out;
  }

  Error submit(const std::string& room, const Member& m, std::int64_t id, std::string_view j) {
    Error refused;
    engine->submit(room, m, id, ops(j), [&](Error e) { refused = std::move(e); });
    return refused;
  }

  EngineLimits limits;
  Hub hub{"node-1"};
  std::unique_ptr<engines::MemoryRoomEngine> engine;
  Member ann{"s-ann", "ann", "Ann", "node-1"};
  Member bob{"s-bob", "bob", "Bob", "node-1"};
  std::shared_ptr<Recorder> ann_rec = std::make_shared<Recorder>();
  std::shared_ptr<Recorder> bob_rec = std::make_shared<Recorder>();
};

TEST_F(EngineTest, ResumeAtTheCurrentSeqRecoversNothing) {
  join("p/s", ann, ann_rec);
  submit("p/s", ann, 1, R"([{"op":"create","entity":"a","parent":"root"}])");
  auto r = join("p/s", bob, bob_rec, Since{"epoch1", 1});
  EXPECT_TRUE(r.recovered);
  EXPECT_TRUE(r.ops.empty());
}

TEST_F(EngineTest, EphIsCoalescedPerSessionAndKindAndNotEchoed) {
  join("p/s", ann, ann_rec);
  join("p/s", bob, bob_rec);
  for (int i = 0; i < 60; ++i) hub.eph("p/s", ann, "cursor", R"({"x":)" + std::to_string(i) + "}");
  hub.eph("p/s", ann, "selection", R"({"ids":["a"]})");
  hub.eph("p/s", bob, "cursor", R"({"x":-1})");
  auto batches = hub.take_eph();
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].entries.size(), 3u);
  for (auto& b : batches) engine->publish_eph(std::move(b));
  auto bob_eph = bob_rec->of_type("eph");
  ASSERT_EQ(bob_eph.size(), 1u);
  const auto& batch = bob_eph[0].at("batch").as_array();
  ASSERT_EQ(batch.size(), 2u);  // ann's cursor (latest only) and selection; not bob's own
  for (const auto& e : batch) EXPECT_EQ(e.at("user").as_string(), "ann");
  bool saw_latest = false;
  for (const auto& e : batch) {
    if (e.at("kind").as_string() == "cursor") saw_latest = e.at("data").at("x").as_int64() == 59;
  }
  EXPECT_TRUE(saw_latest);
  EXPECT_TRUE(hub.take_eph().empty()) << "a flush empties the coalescer";
  // A newcomer sees everyone's latest ephemeral state at once.
  Member cy{"s-cy", "cy", "Cy", "node-1"};
  auto r = join("p/s", cy, std::make_shared<Recorder>());
  ASSERT_EQ(r.presence.size(), 2u);
  for (const auto& m : r.presence) {
    if (m.user == "ann") {
      EXPECT_EQ(m.eph.size(), 2u);
    }
  }
}

TEST_F(EngineTest, EphOfSessionsThatLeftIsDropped) {
  join("p/s", ann, ann_rec);
  join("p/s", bob, bob_rec);
  hub.eph("p/s", bob, "cursor", R"({"x":1})");
  auto batches = hub.take_eph();
  engine->leave("p/s", bob.session);
  for (auto& b : batches) engine->publish_eph(std::move(b));
  EXPECT_TRUE(ann_rec->of_type("eph").empty());
}

TEST_F(EngineTest, NobodyHearsOfABatchBeforeItIsDurable) {
  HeldLog log;
  engine->set_batch_log(&log, {});
  auto ann = std::make_shared<Recorder>();
  auto bob = std::make_shared<Recorder>();
  Member a{"sa", "ann", "Ann", "n"}, b{"sb", "bob", "Bob", "n"};
  join_durable(log, "p/r", a, ann);
  join_durable(log, "p/r", b, bob);
  std::optional<Error> refused;
  engine->submit("p/r", a, 7, ops(R"([{"op":"create","entity":"e","parent":"root"}])"),
                 [&](Error e) { refused = e; });
  ASSERT_EQ(log.appended.size(), 1u);
  EXPECT_EQ(log.appended[0].seq, 1u);
  EXPECT_EQ(log.appended[0].epoch, "epoch1");
  EXPECT_TRUE(ann->of_type("ack").empty()) << "no ack before the log says durable";
  EXPECT_TRUE(bob->of_type("ops").empty()) << "no peer sees it before either";
  // A joiner's answer includes the batch, so it waits for it too.
  std::optional<JoinResult> late;
  const Member cat{"sc", "cat", "Cat", "n"};
  engine->join("p/r", cat, std::nullopt, [&](JoinResult r) { late = std::move(r); });
  EXPECT_FALSE(late);
  log.flush();
  EXPECT_EQ(ann->of_type("ack").size(), 1u);
  EXPECT_EQ(bob->of_type("ops").size(), 1u);
  ASSERT_TRUE(late);
  EXPECT_EQ(late->seq, 1u);
  EXPECT_FALSE(refused);
}

TEST_F(EngineTest, ABatchTheLogRefusesChangesNothing) {
  HeldLog log;
  engine->set_batch_log(&log, {});
  auto ann = std::make_shared<Recorder>();
  Member a{"sa", "ann", "Ann", "n"};
  join_durable(log, "p/r", a, ann);
  log.refuse = fail(Code::Unavailable, "the server's disk is full", 1000);
  std::optional<Error> refused;
  engine->submit("p/r", a, 7, ops(R"([{"op":"create","entity":"e","parent":"root"}])"),
                 [&](Error e) { refused = e; });
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->after_ms, 1000);
  log.refuse = {};
  engine->submit("p/r", a, 8, ops(R"([{"op":"create","entity":"e","parent":"root"}])"),
                 [&](Error e) { refused = e; });
  log.flush();
  auto acks = ann->of_type("ack");
  ASSERT_EQ(acks.size(), 1u) << "the same entity again: the refused batch left no trace";
  EXPECT_EQ(acks[0].at("seq").as_int64(), 1);
}

TEST_F(EngineTest, LoggedBatchesReplayOnTopOfTheStoredSnapshotInTheSameEpoch) {
  HeldLog log;
  engine->set_loader([](const std::string&, auto done) {
    done(StoredRoom{1, R"({"entities":{"a":{"parent":"root","index":"","props":{}}}})", "old"}, "");
  });
  auto frame = [](std::uint64_t seq, const char* id) {
    return encode::ops("p/r", seq, "ann",
                       json::parse(std::string(R"([{"op":"create","entity":")") + id +
                                   R"(","parent":"root","index":"","props":{}}])")
                           .as_array());
  };
  engine->set_batch_log(&log, {LoggedBatch{"p/r", "old", 1, frame(1, "a")},
                               LoggedBatch{"p/r", "old", 2, frame(2, "b")},
                               LoggedBatch{"p/r", "old", 3, frame(3, "c")}});
  auto r = join_durable(log, "p/r", Member{"sa", "ann", "Ann", "n"}, std::make_shared<Recorder>(),
                        Since{"old", 1});
  EXPECT_EQ(r.epoch, "old");
  EXPECT_EQ(r.seq, 3u);
  EXPECT_TRUE(r.recovered);
  EXPECT_EQ(r.ops.size(), 2u);
}

TEST_F(EngineTest, ALogThatCannotVouchForEveryAckStartsEveryRoomInANewEpoch) {
  HeldLog log;
  engine->set_loader([](const std::string&, auto done) {
    done(StoredRoom{4, R"({"entities":{}})", "old"}, "");
  });
  engine->set_batch_log(&log, {}, /*keep_epochs=*/false);
  auto r = join_durable(log, "p/any", Member{"sa", "ann", "Ann", "n"}, std::make_shared<Recorder>(),
                        Since{"old", 4});
  EXPECT_NE(r.epoch, "old");
  EXPECT_FALSE(r.recovered);
  EXPECT_EQ(r.seq, 4u);
}

// A room given a new epoch keeps its state: the log says so (an epoch start record), and
// the next start continues that history rather than seeing a gap (nothing stored yet).
TEST_F(EngineTest, ANewEpochIsLoggedAndTheNextStartContinuesThroughIt) {
  HeldLog log;
  engine->set_loader([](const std::string&, auto done) { done(std::nullopt, ""); });
  auto frame = [](std::uint64_t seq, const char* id) {
    return encode::ops("p/r", seq, "ann",
                       json::parse(std::string(R"([{"op":"create","entity":")") + id +
                                   R"(","parent":"root","index":"","props":{}}])")
                           .as_array());
  };
  engine->set_batch_log(
      &log,
      {LoggedBatch{"p/r", "e1", 1, frame(1, "a")}, LoggedBatch{"p/r", "e1", 2, frame(2, "b")}},
      /*keep_epochs=*/false);
  auto r = join_durable(log, "p/r", Member{"sa", "ann", "Ann", "n"}, std::make_shared<Recorder>());
  EXPECT_EQ(r.seq, 2u);
  EXPECT_NE(r.epoch, "e1");
  ASSERT_EQ(log.appended.size(), 1u) << "the new epoch is logged";
  EXPECT_EQ(log.appended[0].epoch, r.epoch);
  EXPECT_EQ(log.appended[0].seq, 2u);
  EXPECT_TRUE(log.appended[0].frame.empty());
  // The next start, with what the log then holds (and a batch after the epoch start).
  auto records = std::vector<LoggedBatch>{
      LoggedBatch{"p/r", "e1", 1, frame(1, "a")}, LoggedBatch{"p/r", "e1", 2, frame(2, "b")},
      log.appended[0], LoggedBatch{"p/r", r.epoch, 3, frame(3, "c")}};
  SetUp();
  HeldLog next;
  engine->set_loader([](const std::string&, auto done) { done(std::nullopt, ""); });
  engine->set_batch_log(&next, records);
  auto again = join_durable(next, "p/r", Member{"sa", "ann", "Ann", "n"},
                            std::make_shared<Recorder>(), Since{r.epoch, 2});
  EXPECT_EQ(again.epoch, r.epoch);
  EXPECT_EQ(again.seq, 3u);
  EXPECT_TRUE(again.recovered);
  ASSERT_EQ(again.ops.size(), 1u);
  EXPECT_TRUE(next.appended.empty()) << "no new epoch this time";
}

// Records of an epoch the room's history does not pass through (the journal was off while
// the stored snapshot was made) are another history: not applied, and no gap.
TEST_F(EngineTest, LoggedBatchesOfAnotherHistoryAreNotApplied) {
  HeldLog log;
  engine->set_loader([](const std::string&, auto done) {
    done(StoredRoom{1, R"({"entities":{"x":{"parent":"root","index":"","props":{}}}})", "e2"}, "");
  });
  std::vector<std::string> gaps;
  engine->set_on_replay_gap([&](const std::string& room) { gaps.push_back(room); });
  auto frame = encode::ops(
      "p/r", 2, "ann",
      json::parse(R"([{"op":"create","entity":"old","parent":"root","index":"","props":{}}])")
          .as_array());
  engine->set_batch_log(&log, {LoggedBatch{"p/r", "e1", 2, frame}});
  auto r = join_durable(log, "p/r", Member{"sa", "ann", "Ann", "n"}, std::make_shared<Recorder>());
  EXPECT_EQ(r.epoch, "e2");
  EXPECT_EQ(r.seq, 1u);
  EXPECT_FALSE(r.snapshot->at("entities").as_object().contains("old"));
  EXPECT_TRUE(gaps.empty());
}

TEST_F(EngineTest, AGapInTheLoggedBatchesStartsANewEpoch) {
  HeldLog log;
  engine->set_loader([](const std::string&, auto done) { done(std::nullopt, ""); });
  std::vector<std::string> gaps;
  engine->set_on_replay_gap([&](const std::string& room) { gaps.push_back(room); });
  auto frame = encode::ops("p/r", 2, "ann", json::array{});
  engine->set_batch_log(&log, {LoggedBatch{"p/r", "old", 2, frame}});
  auto r = join_durable(log, "p/r", Member{"sa", "ann", "Ann", "n"}, std::make_shared<Recorder>());
  EXPECT_NE(r.epoch, "old");
  EXPECT_EQ(r.seq, 0u);
  EXPECT_EQ(gaps, (std::vector<std::string>{"p/r"}));
}

TEST(HubTest, DuplicatesAreDroppedAndGapsReported) {
  Hub hub("n");
  auto rec = std::make_shared<Recorder>();
  Member m{"s", "u", "U", "n"};
  hub.add("p/s", m, rec, 5);
  auto frame = std::make_shared<const std::string>("{\"t\":\"ops\"}");
  hub.on_ops(OpsEvent{"p/s", 5, "x", "other", 0, frame});  // duplicate of what join covered
  hub.on_ops(OpsEvent{"p/s", 6, "x", "other", 0, frame});
  hub.on_ops(OpsEvent{"p/s", 6, "x", "other", 0, frame});  // duplicate
  hub.on_ops(OpsEvent{"p/s", 8, "x", "other", 0, frame});  // gap: 7 missing
  EXPECT_EQ(rec->frames.size(), 1u);
  EXPECT_EQ(hub.stats().duplicates_dropped, 2u);
  EXPECT_EQ(hub.stats().gaps, 1u);
  EXPECT_EQ(rec->lost, 1);
}

TEST(HubTest, DeadSubscribersAreSkippedLiveOnesServed) {
  Hub hub("n");
  auto live = std::make_shared<Recorder>();
  hub.add("p/s", Member{"live", "u1", "U1", "n"}, live, 0);
  {
    auto gone = std::make_shared<Recorder>();
    hub.add("p/s", Member{"gone", "u2", "U2", "n"}, gone, 0);
  }  // the session closed without leaving the hub
  hub.on_ops(
      OpsEvent{"p/s", 1, "x", "other", 0, std::make_shared<const std::string>(R"({"t":"ops"})")});
  EXPECT_EQ(live->of_type("ops").size(), 1u);
  EXPECT_EQ(hub.stats().gaps, 0u);
}

}  // namespace
}  // namespace kiln::collab
