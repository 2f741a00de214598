// The RoomEngine conformance suite, written once and instantiated per engine: the
// in-memory engine in the unit tier (collab/engine_conformance_test.cpp), the Redis engine
// against real servers in the integration tier (engines/redis_engine_itest.cpp).
//
// It drives an engine through a Hub with recording subscribers, as a gateway node does.
// Engines may answer from other threads, so every expectation waits (bounded) for the
// frame or callback it names.
#pragma once

#include "collab/hub.hpp"
#include "collab/persistence.hpp"
#include "collab/room_engine.hpp"
#include "collab/test_recorder.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

namespace kiln::collab::conformance {

using namespace std::chrono_literals;

// What the suite needs from an engine under test.
struct Harness {
  virtual ~Harness() = default;
  virtual RoomEngine& engine() = 0;
  virtual PersistSource& persistence() = 0;
  virtual void set_loader(RoomLoader loader) = 0;  // before the first join
  // Nodes sharing the engine's backend (node 0 is engine()); an embedded engine has one.
  virtual std::size_t nodes() { return 1; }
  // Node i < nodes(), made on first use.
  virtual RoomEngine& node(std::size_t /*i*/) { return engine(); }
};
using HarnessFactory = std::function<std::unique_ptr<Harness>(const EngineLimits&)>;

struct Named {
  std::string name;
  HarnessFactory make;
};
inline std::ostream& operator<<(std::ostream& o, const Named& n) {
  return o << n.name;
}

class EngineConformance : public ::testing::TestWithParam<Named> {
 protected:
  void start(EngineLimits limits = {}) {
    harness = GetParam().make(limits);
    harness->engine().set_events(&hub);
  }
  void SetUp() override {
    if (GetParam().make) start();
  }
  void TearDown() override {
    if (harness) {
      harness->engine().set_events(nullptr);
      for (auto* n : extra_nodes) n->set_events(nullptr);
    }
    harness.reset();
  }
  RoomEngine& engine() { return harness->engine(); }

  static std::vector<Op> ops(std::string_view j) {
    std::vector<Op> out;
    EXPECT_FALSE(parse_batch(json::parse(j), 1000, out));
    return out;
  }

  JoinResult join(const std::string& room, const Member& m, std::shared_ptr<Recorder> rec,
                  std::optional<Since> since = std::nullopt) {
    return join_at(engine(), hub, room, m, std::move(rec), since);
  }

  JoinResult join_at(RoomEngine& node, Hub& node_hub, const std::string& room, const Member& m,
                     std::shared_ptr<Recorder> rec, std::optional<Since> since = std::nullopt) {
    auto p = std::make_shared<std::promise<JoinResult>>();
    auto f = p->get_future();
    node.join(room, m, since, [p, room, m, rec, &node_hub](JoinResult r) {
      if (!r.error) node_hub.add(room, m, rec, r.seq);
      p->set_value(std::move(r));
    });
    if (f.wait_for(kWait) != std::future_status::ready) {
      ADD_FAILURE() << "join did not answer";
      return {};
    }
    return f.get();
  }

  // Submits and waits for the author's ack (returns its seq) or the refusal.
  std::pair<std::uint64_t, Error> submit(const std::string& room, const Member& m,
                                         std::shared_ptr<Recorder> author, std::int64_t id,
                                         std::string_view j) {
    auto refusal = std::make_shared<std::promise<Error>>();
    auto refused = refusal->get_future();
    engine().submit(room, m, id, ops(j), [refusal](Error e) { refusal->set_value(std::move(e)); });
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    for (;;) {
      for (const auto& a : author->of_type("ack")) {
        if (a.at("id").as_int64() == id && a.at("room").as_string() == room) {
          return {static_cast<std::uint64_t>(a.at("seq").as_int64()), {}};
        }
      }
      if (refused.wait_for(1ms) == std::future_status::ready) return {0, refused.get()};
      if (std::chrono::steady_clock::now() > deadline) break;
    }
    ADD_FAILURE() << "submit got neither ack nor refusal";
    return {0, fail(Code::Unavailable, "timeout")};
  }

  // Ann creates e0..e(n-1), one batch each, each acknowledged.
  void create_entities(const std::string& rm, int n) {
    for (int i = 0; i < n; ++i) {
      const auto [seq, e] =
          submit(rm, ann, ann_rec, i,
                 R"([{"op":"create","entity":"e)" + std::to_string(i) + R"(","parent":"root"}])");
      EXPECT_FALSE(e) << e.message;
    }
  }

  // Node i of the harness with a hub of the test's own: the hub lives as long as the
  // fixture, so a delivery still in flight when the test body ends finds it alive (the
  // engine is told to stop delivering in TearDown, before the hub goes).
  Hub& attach_node(std::size_t i) {
    extra_hubs.push_back(std::make_unique<Hub>("node-" + std::to_string(i + 1)));
    harness->node(i).set_events(extra_hubs.back().get());
    extra_nodes.push_back(&harness->node(i));
    return *extra_hubs.back();
  }

  // The seq the room is marked dirty at, or nullopt when it is clean.
  std::optional<std::uint64_t> dirty_seq_of(const std::string& rm) {
    for (const auto& d : harness->persistence().dirty_rooms(1000).value())
      if (d.room == rm) return d.seq;
    return std::nullopt;
  }

  std::string room(std::string_view name) {
    return "p/" + std::string(name) + "-" + std::to_string(++counter_);
  }

  std::vector<std::unique_ptr<Hub>> extra_hubs;  // before the harness: destroyed after it
  Hub hub{"node-1"};
  std::unique_ptr<Harness> harness;
  std::vector<RoomEngine*> extra_nodes;  // nodes with a hub of the test's (unset at the end)
  Member ann{"s-ann", "ann", "Ann", "node-1"};
  Member bob{"s-bob", "bob", "Bob", "node-1"};
  std::shared_ptr<Recorder> ann_rec = std::make_shared<Recorder>();
  std::shared_ptr<Recorder> bob_rec = std::make_shared<Recorder>();

 private:
  static inline int counter_ = 0;
};

TEST_P(EngineConformance, FirstJoinIsAnEmptySnapshotAtSeqZero) {
  auto r = join(room("first"), ann, ann_rec);
  ASSERT_FALSE(r.error) << r.error.message;
  EXPECT_EQ(r.seq, 0u);
  EXPECT_FALSE(r.recovered);
  ASSERT_TRUE(r.snapshot);
  EXPECT_TRUE(r.snapshot->at("entities").as_object().empty());
  EXPECT_FALSE(r.epoch.empty());
}

TEST_P(EngineConformance, AuthorGetsAckPeersGetOpsInOrder) {
  const auto rm = room("order");
  join(rm, ann, ann_rec);
  join(rm, bob, bob_rec);
  EXPECT_EQ(submit(rm, ann, ann_rec, 10, R"([{"op":"create","entity":"a","parent":"root"}])").first,
            1u);
  EXPECT_EQ(
      submit(rm, bob, bob_rec, 20, R"([{"op":"set","entity":"a","key":"k","value":1}])").first, 2u);
  auto bob_ops = bob_rec->wait_for("ops", 1);
  ASSERT_EQ(bob_ops.size(), 1u);
  EXPECT_EQ(bob_ops[0].at("seq").as_int64(), 1);
  EXPECT_EQ(bob_ops[0].at("author").as_string(), "ann");
  auto ann_ops = ann_rec->wait_for("ops", 1);
  ASSERT_EQ(ann_ops.size(), 1u);
  EXPECT_EQ(ann_ops[0].at("seq").as_int64(), 2);
}

// Editors on every node each send a run of batches without waiting for acks (as a client
// pipelines them), all to one entity: the room applies each author's batches in the order
// sent, whatever the contention, refuses none, and each author's acks come in that order.
TEST_P(EngineConformance, OneAuthorsBatchesApplyInTheOrderSentUnderContention) {
  const auto rm = room("contended");
  join(rm, ann, ann_rec);
  ASSERT_FALSE(
      submit(rm, ann, ann_rec, 1, R"([{"op":"create","entity":"board","parent":"root"}])").second);
  const std::size_t nodes = harness->nodes();
  std::vector<Hub*> hub_of{&hub};
  for (std::size_t i = 1; i < nodes; ++i) hub_of.push_back(&attach_node(i));
  constexpr int kAuthors = 30;
  constexpr int kBatches = 20;
  std::vector<Member> members;
  std::vector<std::shared_ptr<Recorder>> recs;
  for (int a = 0; a < kAuthors; ++a) {
    const auto n = static_cast<std::size_t>(a) % nodes;
    members.push_back(Member{"s-c" + std::to_string(a), "u" + std::to_string(a), "U",
                             "node-" + std::to_string(n + 1)});
    recs.push_back(std::make_shared<Recorder>());
    auto r = join_at(harness->node(n), *hub_of[n], rm, members.back(), recs.back());
    ASSERT_FALSE(r.error) << r.error.message;
  }
  std::atomic<int> refused{0};
  std::string first_refusal;
  std::mutex refusal_mu;
  std::vector<std::thread> threads;
  for (int a = 0; a < kAuthors; ++a) {
    threads.emplace_back([&, a] {
      auto& node = harness->node(static_cast<std::size_t>(a) % nodes);
      for (int k = 1; k <= kBatches; ++k) {
        node.submit(rm, members[static_cast<std::size_t>(a)], k,
                    ops(R"([{"op":"set","entity":"board","key":"c)" + std::to_string(a) +
                        R"(","value":)" + std::to_string(k) + "}]"),
                    [&](Error e) {
                      std::lock_guard lock(refusal_mu);
                      if (refused++ == 0) first_refusal = e.message;
                    });
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int a = 0; a < kAuthors; ++a) {
    auto acks = recs[static_cast<std::size_t>(a)]->wait_for("ack", kBatches);
    ASSERT_EQ(acks.size(), static_cast<std::size_t>(kBatches))
        << "author " << a << "; refusals: " << refused.load() << " (" << first_refusal << ")";
    for (int k = 0; k < kBatches; ++k) {
      EXPECT_EQ(acks[static_cast<std::size_t>(k)].at("id").as_int64(), k + 1)
          << "author " << a << "'s acks come in the order sent";
      if (k > 0) {
        EXPECT_GT(acks[static_cast<std::size_t>(k)].at("seq").as_int64(),
                  acks[static_cast<std::size_t>(k) - 1].at("seq").as_int64())
            << "author " << a << "'s batch " << k + 1 << " landed before batch " << k;
      }
    }
  }
  EXPECT_EQ(refused.load(), 0) << first_refusal;
  auto newcomer = std::make_shared<Recorder>();
  auto r = join(rm, Member{"s-new", "new", "New", "node-1"}, newcomer);
  ASSERT_TRUE(r.snapshot);
  EXPECT_EQ(r.seq, static_cast<std::uint64_t>(1 + kAuthors * kBatches));
  const auto& props = r.snapshot->at("entities").at("board").at("props").as_object();
  for (int a = 0; a < kAuthors; ++a) {
    EXPECT_EQ(props.at("c" + std::to_string(a)).as_int64(), kBatches)
        << "author " << a << "'s last batch is the value everyone sees";
  }
}

TEST_P(EngineConformance, RefusedBatchesGetTheReasonAndNoSeq) {
  const auto rm = room("refused");
  join(rm, ann, ann_rec);
  auto [seq, e] =
      submit(rm, ann, ann_rec, 1, R"([{"op":"set","entity":"ghost","key":"k","value":1}])");
  EXPECT_EQ(e.code, Code::NotFound);
  EXPECT_EQ(submit(rm, ann, ann_rec, 2, R"([{"op":"create","entity":"a","parent":"root"}])").first,
            1u);
  auto [s2, cycle] = submit(
      rm, ann, ann_rec, 3,
      R"([{"op":"create","entity":"b","parent":"a"},{"op":"move","entity":"a","parent":"b"}])");
  EXPECT_EQ(cycle.code, Code::Cycle);
}

TEST_P(EngineConformance, ResumeRecoversExactlyTheMissedOps) {
  const auto rm = room("resume");
  auto first = join(rm, ann, ann_rec);
  create_entities(rm, 5);
  auto r = join(rm, bob, bob_rec, Since{first.epoch, 2});
  EXPECT_TRUE(r.recovered);
  EXPECT_EQ(r.seq, 5u);
  ASSERT_EQ(r.ops.size(), 3u);
  EXPECT_EQ(json::parse(*r.ops[0]).at("seq").as_int64(), 3);
  EXPECT_EQ(json::parse(*r.ops[2]).at("seq").as_int64(), 5);
  Member cy{"s-cy", "cy", "Cy", "node-1"};
  auto other = join(rm, cy, std::make_shared<Recorder>(), Since{"not-the-epoch", 2});
  EXPECT_FALSE(other.recovered);
  ASSERT_TRUE(other.snapshot);
  EXPECT_EQ(other.snapshot->at("entities").as_object().size(), 5u);
}

TEST_P(EngineConformance, PastTheRetentionWindowGivesASnapshot) {
  EngineLimits limits;
  limits.log_retention = 2;
  start(limits);
  const auto rm = room("retention");
  auto first = join(rm, ann, ann_rec);
  create_entities(rm, 5);
  auto old = join(rm, bob, bob_rec, Since{first.epoch, 1});
  EXPECT_FALSE(old.recovered);
  Member cy{"s-cy", "cy", "Cy", "node-1"};
  auto recent = join(rm, cy, std::make_shared<Recorder>(), Since{first.epoch, 3});
  EXPECT_TRUE(recent.recovered);
  EXPECT_EQ(recent.ops.size(), 2u);
}

TEST_P(EngineConformance, PresenceJoinsAndLeavesReachOthers) {
  const auto rm = room("presence");
  join(rm, ann, ann_rec);
  auto r = join(rm, bob, bob_rec);
  ASSERT_EQ(r.presence.size(), 1u);
  EXPECT_EQ(r.presence[0].session, "s-ann");
  auto p = ann_rec->wait_for("presence", 1);
  ASSERT_GE(p.size(), 1u);
  EXPECT_EQ(p[0].at("joined").at(0).at("user").as_string(), "bob");
  hub.remove(rm, bob.session);
  engine().leave(rm, bob.session);
  p = ann_rec->wait_for("presence", 2);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[1].at("left").at(0).as_string(), "s-bob");
}

TEST_P(EngineConformance, EphReachesPeersNotTheSenderAndNewcomersSeeIt) {
  const auto rm = room("eph");
  join(rm, ann, ann_rec);
  join(rm, bob, bob_rec);
  hub.eph(rm, ann, "cursor", R"({"x":1})");
  hub.eph(rm, ann, "cursor", R"({"x":2})");
  for (auto& b : hub.take_eph()) engine().publish_eph(std::move(b));
  auto got = bob_rec->wait_for("eph", 1);
  ASSERT_EQ(got.size(), 1u);
  const auto& batch = got[0].at("batch").as_array();
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].at("data").at("x").as_int64(), 2);
  // The hub hands one batch to every local member in one call: bob has it, so ann's share
  // (none: a sender never gets its own entries) is settled too.
  EXPECT_TRUE(ann_rec->of_type("eph").empty());
  Member cy{"s-cy", "cy", "Cy", "node-1"};
  auto r = join(rm, cy, std::make_shared<Recorder>());
  bool saw = false;
  for (const auto& m : r.presence) {
    if (m.user == "ann") saw = m.eph.size() == 1 && m.eph[0].second == R"({"x":2})";
  }
  EXPECT_TRUE(saw);
}

TEST_P(EngineConformance, FullRoomRefusesNewMembers) {
  EngineLimits limits;
  limits.max_members = 1;
  start(limits);
  const auto rm = room("full");
  EXPECT_FALSE(join(rm, ann, ann_rec).error);
  EXPECT_EQ(join(rm, bob, bob_rec).error.code, Code::TooLarge);
}

// Isolation without a timing window: after ann's batch in room one is acknowledged, bob
// writes in room two. Had ann's batch leaked into room two's log, bob's batch would get
// seq 2; had it been published on room two's channel, it would reach bob before his own
// ack (one channel delivers in order, and ann's publish was done before bob's submit).
TEST_P(EngineConformance, RoomsAreIsolated) {
  const auto one = room("iso"), two = room("iso");
  join(one, ann, ann_rec);
  join(two, bob, bob_rec);
  EXPECT_EQ(submit(one, ann, ann_rec, 1, R"([{"op":"create","entity":"a","parent":"root"}])").first,
            1u);
  EXPECT_EQ(submit(two, bob, bob_rec, 1, R"([{"op":"create","entity":"b","parent":"root"}])").first,
            1u);
  EXPECT_TRUE(bob_rec->of_type("ops").empty()) << "room one's batch reached a member of room two";
  auto r = join(two, Member{"s-cy", "cy", "Cy", "node-1"}, std::make_shared<Recorder>());
  ASSERT_TRUE(r.snapshot);
  EXPECT_EQ(r.seq, 1u);
  const auto& ents = r.snapshot->at("entities").as_object();
  EXPECT_EQ(ents.size(), 1u);
  EXPECT_TRUE(ents.contains("b"));
  // The same the other way round: ann writes again after bob's batch.
  EXPECT_EQ(submit(one, ann, ann_rec, 2, R"([{"op":"create","entity":"c","parent":"root"}])").first,
            2u);
  EXPECT_TRUE(ann_rec->of_type("ops").empty()) << "room two's batch reached a member of room one";
}

// --- persistence: what the write-behind persister and the loader rely on ---------------

TEST_P(EngineConformance, ChangedRoomsAreDirtyUntilStoredAtTheirSeq) {
  const auto rm = room("dirty");
  join(rm, ann, ann_rec);
  auto& p = harness->persistence();
  auto dirty_seq = [&] { return dirty_seq_of(rm); };
  EXPECT_FALSE(dirty_seq()) << "a room nobody changed is not dirty";
  create_entities(rm, 3);
  ASSERT_EQ(dirty_seq(), std::optional<std::uint64_t>(3));
  auto state = p.read_room(rm).value();
  ASSERT_TRUE(state);
  EXPECT_EQ(state->seq, 3u);
  EXPECT_FALSE(state->epoch.empty());
  auto snap = json::parse(state->snapshot);
  EXPECT_EQ(snap.at("entities").as_object().size(), 3u);
  ASSERT_TRUE(p.mark_stored(rm, 2));  // an older store does not clear a newer change
  EXPECT_EQ(dirty_seq(), std::optional<std::uint64_t>(3));
  ASSERT_TRUE(p.mark_stored(rm, 3));
  EXPECT_FALSE(dirty_seq());
  submit(rm, ann, ann_rec, 99, R"([{"op":"create","entity":"z","parent":"root"}])");
  EXPECT_EQ(dirty_seq(), std::optional<std::uint64_t>(4));
  bool listed = false;
  for (const auto& r : p.all_rooms().value()) listed = listed || (r.room == rm && r.seq == 4);
  EXPECT_TRUE(listed) << "all_rooms() lists every room with its seq";
  EXPECT_FALSE(p.read_room("p/never-used-" + rm.substr(2)).value());
}

// persistence.md step 3: the clear of a dirty mark races new batches. A persister loop
// (read the state, "store" it, clear the mark at the stored seq) runs while an author
// writes; whenever a batch lands between the read and the clear, the room must stay dirty
// at the newer seq. At the end, once nothing is dirty, what was stored last is the room's
// last batch: no change is left out of the database.
TEST_P(EngineConformance, AClearRacingANewBatchLeavesTheRoomDirty) {
  const auto rm = room("race");
  join(rm, ann, ann_rec);
  auto& p = harness->persistence();
  auto dirty_seq = [&] { return dirty_seq_of(rm); };
  // The author writes one batch at a time until enough clears have raced a batch (or a
  // bound), so the race is met on every engine however fast or slow its calls are.
  constexpr int kMaxBatches = 5000;
  std::atomic<int> kept_dirty{0};  // clears that found a newer batch: the race happened
  std::atomic<int> written{0};
  std::thread author([&] {
    for (int k = 1; k <= kMaxBatches && kept_dirty < 5; ++k) {
      submit(rm, ann, ann_rec, k,
             R"([{"op":"create","entity":"e)" + std::to_string(k) + R"(","parent":"root"}])");
      written = k;
    }
  });
  std::uint64_t stored = 0;
  std::atomic<bool> done{false};
  auto pass = [&] {
    if (!dirty_seq()) return false;
    auto state = p.read_room(rm).value();
    if (!state) return false;
    stored = state->seq;
    EXPECT_TRUE(p.mark_stored(rm, state->seq));
    if (auto now = dirty_seq(); now && *now > state->seq) ++kept_dirty;
    return true;
  };
  std::thread persister([&] {
    while (!done) pass();
  });
  author.join();
  done = true;
  persister.join();
  while (pass()) {
  }
  EXPECT_FALSE(dirty_seq());
  EXPECT_EQ(stored, static_cast<std::uint64_t>(written.load()))
      << "the room was clean while a batch was not stored";
  EXPECT_GE(kept_dirty.load(), 1) << "no clear raced a batch: the test did not test the race";
}

TEST_P(EngineConformance, ARoomNotHeldStartsFromTheStoredSnapshotWithANewEpoch) {
  auto asked = std::make_shared<std::atomic<int>>(0);
  harness->set_loader([asked](const std::string& r, auto done) {
    ++*asked;
    if (r.find("/stored-") != std::string::npos) {
      done(
          StoredRoom{7, R"({"entities":{"a":{"parent":"root","index":"a0","props":{"k":1}}}})", ""},
          "");
    } else {
      done(std::nullopt, "");
    }
  });
  const auto rm = room("stored");
  auto r = join(rm, ann, ann_rec);
  ASSERT_FALSE(r.error) << r.error.message;
  EXPECT_EQ(r.seq, 7u);
  ASSERT_TRUE(r.snapshot);
  EXPECT_EQ(r.snapshot->at("entities").at("a").at("props").at("k").as_int64(), 1);
  EXPECT_EQ(asked->load(), 1);
  // The history continues after the stored seq.
  EXPECT_EQ(submit(rm, ann, ann_rec, 1, R"([{"op":"set","entity":"a","key":"k","value":2}])").first,
            8u);
  // A resume from before (another epoch) gets the snapshot, not a replay.
  auto b = join(rm, bob, bob_rec, Since{"an-old-epoch", 5});
  EXPECT_FALSE(b.recovered);
  EXPECT_EQ(b.seq, 8u);
  EXPECT_EQ(asked->load(), 1) << "a room held is not loaded again";
  // Nothing stored: the room starts empty at seq 0.
  auto fresh = join(room("nothing"), ann, ann_rec);
  ASSERT_FALSE(fresh.error) << fresh.error.message;
  EXPECT_EQ(fresh.seq, 0u);
}

TEST_P(EngineConformance, AJoinFailsWhileTheStoreCannotAnswerAndALaterOneLoads) {
  auto fail_first = std::make_shared<std::atomic<bool>>(true);
  harness->set_loader([fail_first](const std::string&, auto done) {
    if (fail_first->exchange(false)) {
      done(std::nullopt, "database unreachable");
    } else {
      done(StoredRoom{3, R"({"entities":{}})", ""}, "");
    }
  });
  const auto rm = room("unreachable");
  auto first = join(rm, ann, ann_rec);
  EXPECT_EQ(first.error.code, Code::Unavailable);
  auto second = join(rm, ann, ann_rec);
  ASSERT_FALSE(second.error) << second.error.message;
  EXPECT_EQ(second.seq, 3u);
}

}  // namespace kiln::collab::conformance
