// The RoomEngine conformance suite on the Redis engine, against the real standalone Redis
// and the 6-node Cluster of the `redis` CTest fixture (KILN_TEST_REDIS).
#include "clients/redis/test_env.hpp"
#include "collab/engine_conformance.hpp"
#include "engines/redis/redis_engine.hpp"
#include "engines/redis/redis_messages.hpp"
#include "platform/ids.hpp"
#include "platform/runtime.hpp"

#include <atomic>
#include <cstdlib>
#include <functional>
#include <future>
#include <set>
#include <sstream>
#include <thread>

namespace kiln::engines {
namespace {

using collab::Hub;
using collab::Member;
using collab::conformance::EngineConformance;
using collab::conformance::Harness;
using collab::conformance::Named;
using collab::conformance::Recorder;

class RedisHarness : public Harness {
 public:
  RedisHarness(const collab::EngineLimits& limits, bool cluster,
               std::chrono::milliseconds evict_after = std::chrono::seconds(30),
               const std::function<void(RedisEngineOptions&)>& tweak = {})
      : runtime_(1) {
    auto ep = redis::test_endpoint(cluster ? 1 : 0);
    if (!ep) throw std::runtime_error("KILN_TEST_REDIS not set (run through ctest)");
    prefix_ = "itest-" + ids::random_hex(4);  // a keyspace of its own per test
    redis::ConnectionOptions o;
    o.endpoint = *ep;
    o.client_name = prefix_;  // so that a test can cut exactly this test's connections
    client_ = cluster ? redis::Client::cluster(runtime_, {*ep}, o)
                      : redis::Client::standalone(runtime_, o);
    RedisEngineOptions eo;
    eo.prefix = prefix_;
    eo.limits = limits;
    eo.connection = o;
    eo.evict_after = evict_after;
    if (tweak) tweak(eo);
    engine_ =
        std::make_unique<RedisRoomEngine>(runtime_, client_, eo, [] { return ids::random_hex(8); });
    options_ = eo;
    cluster_ = cluster;
    thread_ = std::thread([this] { runtime_.run(); });
  }
  ~RedisHarness() override {
    for (auto& [c, e] : peers_) {
      e->close();
      c->close();
    }
    engine_->close();
    client_->close();
    runtime_.stop();
    thread_.join();
    runtime_.run_ready_handlers();  // the closes fail what is pending, breaking cycles
  }
  collab::RoomEngine& engine() override { return *engine_; }
  collab::PersistSource& persistence() override { return *engine_; }
  void set_loader(collab::RoomLoader loader) override { engine_->set_loader(std::move(loader)); }
  // Three gateway nodes on one Redis: node 0 and two more, each with its own client.
  std::size_t nodes() override { return 3; }
  collab::RoomEngine& node(std::size_t i) override {
    if (i == 0) return *engine_;
    std::lock_guard lock(peers_mu_);
    while (peers_.size() < i) {
      auto ep = redis::test_endpoint(cluster_ ? 1 : 0);
      redis::ConnectionOptions o = options_.connection;
      auto c = cluster_ ? redis::Client::cluster(runtime_, {*ep}, o)
                        : redis::Client::standalone(runtime_, o);
      auto eo = options_;
      eo.node = "node-" + std::to_string(peers_.size() + 2);
      peers_.emplace_back(
          c, std::make_unique<RedisRoomEngine>(runtime_, c, eo, [] { return ids::random_hex(8); }));
    }
    return *peers_[i - 1].second;
  }
  RedisRoomEngine& redis_engine() { return *engine_; }
  const std::string& prefix() const { return prefix_; }
  // Closes every connection of this test's engines to the server holding `key` (by their
  // client name; other tests' connections to the shared server are left alone): `type` is
  // "normal" (commands) or "pubsub" (subscriptions). Returns how many were closed.
  int cut_connections(std::string_view key, std::string_view type) {
    auto list = command(key, {"CLIENT", "LIST", "TYPE", std::string(type)});
    if (list.is_error()) return 0;
    int cut = 0;
    std::istringstream lines(list.str);
    for (std::string line; std::getline(lines, line);) {
      if (line.find(" name=" + prefix_ + " ") == std::string::npos) continue;
      const auto id = line.substr(3, line.find(' ') - 3);  // "id=<n> ..."
      auto r = command(key, {"CLIENT", "KILL", "ID", id});
      if (!r.is_error() && r.integer == 1) ++cut;
    }
    return cut;
  }
  // Runs one command on the engine's own Redis client (to tamper with a room's keys).
  redis::Reply command(std::string_view key, std::vector<std::string> args) {
    auto p = std::make_shared<std::promise<redis::Reply>>();
    auto f = p->get_future();
    client_->command(key, std::move(args), [p](redis::Reply r) { p->set_value(std::move(r)); });
    if (f.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
      return redis::Reply::error("no reply");
    return f.get();
  }

 private:
  Runtime runtime_;
  std::shared_ptr<redis::Client> client_;
  std::unique_ptr<RedisRoomEngine> engine_;
  std::thread thread_;
  std::string prefix_;
  RedisEngineOptions options_;
  bool cluster_ = false;
  std::mutex peers_mu_;
  std::vector<std::pair<std::shared_ptr<redis::Client>, std::unique_ptr<RedisRoomEngine>>> peers_;
};

INSTANTIATE_TEST_SUITE_P(Redis, EngineConformance,
                         ::testing::Values(Named{"standalone",
                                                 [](const collab::EngineLimits& l) {
                                                   return std::make_unique<RedisHarness>(l, false);
                                                 }},
                                           Named{"cluster",
                                                 [](const collab::EngineLimits& l) {
                                                   return std::make_unique<RedisHarness>(l, true);
                                                 }}),
                         [](const auto& info) { return info.param.name; });

// Behaviour only the Redis engine has.
// A room nobody on this node is in any more is dropped (copy and subscription), and a
// later join builds it again, subscribed, from Redis.
class RedisEngineOnly : public collab::conformance::EngineConformance {};

TEST_P(RedisEngineOnly, RoomsWithoutLocalMembersAreDroppedAndComeBack) {
  auto h = std::make_unique<RedisHarness>(collab::EngineLimits{}, GetParam().name == "cluster",
                                          std::chrono::milliseconds(0));
  auto* redis = &h->redis_engine();
  harness = std::move(h);
  harness->engine().set_events(&hub);
  const auto rm = room("evict");
  ASSERT_FALSE(join(rm, ann, ann_rec).error);
  EXPECT_EQ(submit(rm, ann, ann_rec, 1, R"([{"op":"create","entity":"a","parent":"root"}])").first,
            1u);
  hub.remove(rm, ann.session);
  engine().leave(rm, ann.session);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (redis->rooms() != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();  // polling the condition, bounded by the deadline
  }
  EXPECT_EQ(redis->rooms(), 0u);
  auto again = join(rm, bob, bob_rec);
  ASSERT_FALSE(again.error);
  EXPECT_EQ(again.seq, 1u);
  EXPECT_EQ(again.snapshot->at("entities").as_object().size(), 1u);
  EXPECT_EQ(submit(rm, bob, bob_rec, 2, R"([{"op":"create","entity":"b","parent":"root"}])").first,
            2u);
}

// Redis losing acknowledged batches (a failover before replication) is simulated by
// rolling the room's keys back: the node notices at its next append, starts a new epoch
// once, and every local member is told to resynchronise; a new join sees the new epoch.
TEST_P(RedisEngineOnly, HistoryThatGoesBackwardsStartsANewEpoch) {
  auto h = std::make_unique<RedisHarness>(collab::EngineLimits{}, GetParam().name == "cluster");
  auto* raw = h.get();
  harness = std::move(h);
  harness->engine().set_events(&hub);
  const auto rm = room("lost");
  auto first = join(rm, ann, ann_rec);
  ASSERT_FALSE(first.error);
  for (int i = 1; i <= 3; ++i) {
    ASSERT_EQ(
        submit(rm, ann, ann_rec, i,
               R"([{"op":"create","entity":"e)" + std::to_string(i) + R"(","parent":"root"}])")
            .first,
        static_cast<std::uint64_t>(i));
  }
  const std::string meta = raw->prefix() + ":{" + rm + "}:meta";
  const std::string log = raw->prefix() + ":{" + rm + "}:log";
  ASSERT_FALSE(raw->command(meta, {"HSET", meta, "seq", "1"}).is_error());
  ASSERT_FALSE(raw->command(log, {"XDEL", log, "2-0", "3-0"}).is_error());
  engine().submit(rm, ann, 4, ops(R"([{"op":"create","entity":"e4","parent":"root"}])"),
                  [](collab::Error) {});
  {
    std::unique_lock lock(ann_rec->mu);
    ann_rec->cv.wait_for(lock, std::chrono::seconds(10), [&] { return ann_rec->lost > 0; });
    EXPECT_GT(ann_rec->lost, 0) << "the member is told to resynchronise";
  }
  // The new epoch is in Redis before the members are told; a join now sees it.
  auto again = join(rm, bob, bob_rec, collab::Since{first.epoch, 3});
  ASSERT_FALSE(again.error);
  EXPECT_NE(again.epoch, first.epoch);
  EXPECT_FALSE(again.recovered);
}

// redis-keyspace.md, durability: with ack_replicas N the ack waits for N replicas, at most
// wait_timeout; past it the ack is sent anyway and counted. The standalone server of the
// fixture has no replica (every ack times out); each Cluster primary has one (none does).
TEST_P(RedisEngineOnly, AnAckWaitsForTheReplicasAtMostTheTimeoutAndIsCounted) {
  const bool cluster = GetParam().name == "cluster";
  std::atomic<int> timeouts{0};
  harness = std::make_unique<RedisHarness>(collab::EngineLimits{}, cluster,
                                           std::chrono::seconds(30), [&](RedisEngineOptions& o) {
                                             o.ack_replicas = 1;
                                             o.wait_timeout = std::chrono::milliseconds(300);
                                             o.on_wait_timeout = [&] { ++timeouts; };
                                           });
  harness->engine().set_events(&hub);
  const auto rm = room("wait");
  ASSERT_FALSE(join(rm, ann, ann_rec).error);
  for (int i = 1; i <= 3; ++i) {
    const auto started = std::chrono::steady_clock::now();
    const auto [seq, e] =
        submit(rm, ann, ann_rec, i,
               R"([{"op":"create","entity":"e)" + std::to_string(i) + R"(","parent":"root"}])");
    const auto took = std::chrono::steady_clock::now() - started;
    ASSERT_FALSE(e) << e.message;
    EXPECT_EQ(seq, static_cast<std::uint64_t>(i)) << "acked although the replicas were silent";
    if (!cluster) {
      EXPECT_GE(took, std::chrono::milliseconds(300)) << "the ack did not wait for the replicas";
    }
  }
  EXPECT_EQ(timeouts.load(), cluster ? 0 : 3);
}

// redis-keyspace.md, step 5: a node that receives S+2 before S+1 fills the gap from the log
// before delivering anything later. The fault is made exactly: batch S+1 is written to the
// log and the room's seq by hand and never published, as if its message was lost; node 2
// then appends S+2 (it must catch up from the log first, the channel brings nothing), and
// node 1 receives S+2 on the channel with S+1 missing.
TEST_P(RedisEngineOnly, ABatchLostOnTheChannelIsFilledFromTheLogInOrder) {
  auto h = std::make_unique<RedisHarness>(collab::EngineLimits{}, GetParam().name == "cluster");
  auto* raw = h.get();
  harness = std::move(h);
  harness->engine().set_events(&hub);
  Hub& hub2 = attach_node(1);
  const auto rm = room("gap");
  ASSERT_FALSE(join(rm, ann, ann_rec).error);
  Member cy{"s-cy", "cy", "Cy", "node-2"};
  auto cy_rec = std::make_shared<Recorder>();
  ASSERT_FALSE(join_at(harness->node(1), hub2, rm, cy, cy_rec).error);
  ASSERT_EQ(submit(rm, ann, ann_rec, 1, R"([{"op":"create","entity":"a","parent":"root"}])").first,
            1u);
  ASSERT_EQ(cy_rec->wait_for("ops", 1).size(), 1u);

  const std::string meta = raw->prefix() + ":{" + rm + "}:meta";
  const std::string log = raw->prefix() + ":{" + rm + "}:log";
  OpsMessage lost;
  lost.seq = 2;
  lost.user = "mallory";
  lost.session = "s-mallory";
  lost.request_id = 7;
  lost.frame =
      R"({"t":"ops","room":")" + rm +
      R"(","seq":2,"author":"mallory","ops":[{"op":"create","entity":"lost","parent":"root","index":"","props":{}}]})";
  ASSERT_FALSE(raw->command(log, {"XADD", log, "2-0", "m", encode_ops(lost)}).is_error());
  ASSERT_FALSE(raw->command(meta, {"HSET", meta, "seq", "2"}).is_error());

  auto& node2 = harness->node(1);
  auto refused = std::make_shared<std::promise<collab::Error>>();
  auto refusal = refused->get_future();
  // Valid on node 2's copy (at seq 1), so it is appended, conflicts, and is appended again.
  node2.submit(rm, cy, 1, ops(R"([{"op":"create","entity":"b","parent":"root"}])"),
               [refused](collab::Error e) { refused->set_value(std::move(e)); });
  auto acks = cy_rec->wait_for("ack", 1);
  if (acks.empty() && refusal.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    FAIL() << "node 2 refused the batch: " << refusal.get().message;
  }
  ASSERT_EQ(acks.size(), 1u) << "node 2 never appended after the lost batch";
  EXPECT_EQ(acks[0].at("seq").as_int64(), 3) << "node 2 appended on top of the lost batch";
  auto got = ann_rec->wait_for("ops", 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].at("seq").as_int64(), 2) << "the lost batch came to node 1 from the log";
  EXPECT_EQ(got[0].at("author").as_string(), "mallory");
  EXPECT_EQ(got[1].at("seq").as_int64(), 3);
  // Both copies agree with what a newcomer loads from Redis.
  auto r = join(rm, bob, bob_rec);
  ASSERT_TRUE(r.snapshot);
  EXPECT_EQ(r.seq, 3u);
  const auto& ents = r.snapshot->at("entities").as_object();
  EXPECT_TRUE(ents.contains("a"));
  EXPECT_TRUE(ents.contains("lost"));
  EXPECT_TRUE(ents.contains("b"));
}

// redis-keyspace.md: snapshots every snapshot_every batches and a log trimmed to what loading
// and resuming need, under a fault: the room's Redis server drops every engine connection
// (CLIENT KILL) every few batches, so snapshot writes and appends in flight are cut, and
// subscriptions (messages published meanwhile are lost to the node). After
// it a node that never held the room loads it from Redis (snapshot + log) and must see
// exactly what the writer's node sees: every acknowledged batch, nothing twice; and the
// log must hold every entry loading and resuming need.
TEST_P(RedisEngineOnly, SnapshotsAndTrimmingLoseNothingWhenConnectionsAreCut) {
  collab::EngineLimits limits;
  limits.log_retention = 3;
  auto h =
      std::make_unique<RedisHarness>(limits, GetParam().name == "cluster", std::chrono::seconds(30),
                                     [](RedisEngineOptions& o) { o.snapshot_every = 4; });
  auto* raw = h.get();
  harness = std::move(h);
  harness->engine().set_events(&hub);
  const auto rm = room("trim");
  ASSERT_FALSE(join(rm, ann, ann_rec).error);
  const std::string meta = raw->prefix() + ":{" + rm + "}:meta";
  const std::string log = raw->prefix() + ":{" + rm + "}:log";
  std::set<std::string> acked;
  int kills = 0;
  for (int i = 1; i <= 60; ++i) {
    const auto id = "e" + std::to_string(i);
    const auto [seq, e] = submit(rm, ann, ann_rec, i,
                                 R"([{"op":"create","entity":")" + id + R"(","parent":"root"}])");
    if (!e) acked.insert(id);
    if (i % 4 == 0) {
      // Right after the batch that triggers a snapshot write: the command connections
      // (the engines' and this test's), or the subscriptions (messages are lost).
      if (raw->cut_connections(meta, i % 8 == 0 ? "normal" : "pubsub") > 0) ++kills;
    }
  }
  ASSERT_GE(kills, 5) << "the fault was not made";
  ASSERT_GE(acked.size(), 30u) << "too few batches got through to test anything";

  // What Redis holds: snap_seq <= seq, and the log holds (min(snap_seq, seq - retention), seq]
  // without a hole.
  auto m = raw->command(meta, {"HMGET", meta, "seq", "snap_seq"});
  ASSERT_EQ(m.elements.size(), 2u);
  const auto seq = std::stoull(m.elements[0].str);
  const auto snap_seq = std::stoull(m.elements[1].str);
  EXPECT_LE(snap_seq, seq);
  EXPECT_GT(snap_seq, 0u) << "no snapshot was stored";
  auto entries = raw->command(log, {"XRANGE", log, "-", "+"});
  ASSERT_FALSE(entries.is_error());
  std::vector<std::uint64_t> ids;
  for (const auto& en : entries.elements) ids.push_back(std::stoull(en.elements.at(0).str));
  const auto need_from = std::min(snap_seq, seq - std::min<std::uint64_t>(seq, 3)) + 1;
  ASSERT_FALSE(ids.empty());
  EXPECT_LE(ids.front(), need_from) << "the log was trimmed past what loading or resuming need";
  EXPECT_EQ(ids.back(), seq);
  for (std::size_t k = 1; k < ids.size(); ++k)
    EXPECT_EQ(ids[k], ids[k - 1] + 1) << "a hole in the log";
  EXPECT_LT(ids.size(), 60u) << "the log was never trimmed";

  // A node that never held the room loads it from Redis; the writer's node answers from its
  // copy. Both agree, and hold every acknowledged batch once.
  Hub& hub3 = attach_node(2);
  auto loaded = join_at(harness->node(2), hub3, rm, Member{"s-new", "new", "New", "node-3"},
                        std::make_shared<Recorder>());
  auto held = join(rm, bob, bob_rec);
  ASSERT_TRUE(loaded.snapshot);
  ASSERT_TRUE(held.snapshot);
  EXPECT_EQ(loaded.seq, seq);
  EXPECT_EQ(held.seq, seq);
  EXPECT_EQ(*loaded.snapshot, *held.snapshot);
  const auto& ents = loaded.snapshot->at("entities").as_object();
  EXPECT_EQ(ents.size(), seq) << "one entity per applied batch";
  for (const auto& id : acked) EXPECT_TRUE(ents.contains(id)) << id << " was acknowledged";
}

INSTANTIATE_TEST_SUITE_P(Redis, RedisEngineOnly,
                         ::testing::Values(Named{"standalone", nullptr}, Named{"cluster", nullptr}),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace kiln::engines
