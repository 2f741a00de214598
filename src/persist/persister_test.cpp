// The persister on the embedded adapters (the memory engine and SQLite): what it writes,
// when, and what it leaves for the next pass. The same persister on Redis and PostgreSQL
// through PgBouncer is exercised end to end in tests/e2e/test_persistence.py.
#include "persist/persister.hpp"
#include "store/test_sqlite.hpp"

#include "engines/memory/memory_engine.hpp"
#include "platform/metrics.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <set>

#include <future>

namespace kiln::persist {
namespace {

using namespace std::chrono_literals;

store::DatabaseOptions sqlite_options() {
  auto o = store::test::temp_sqlite("persist");
  return o;
}

class PersisterTest : public ::testing::Test {
 protected:
  void SetUp() override { store.migrate(); }

  void join(engines::MemoryRoomEngine& e, const std::string& room) {
    std::promise<collab::JoinResult> p;
    e.join(room, ann, std::nullopt, [&](collab::JoinResult r) { p.set_value(std::move(r)); });
    auto r = p.get_future().get();
    ASSERT_FALSE(r.error) << r.error.message;
  }
  void edit(engines::MemoryRoomEngine& e, const std::string& room, int n) {
    for (int i = 0; i < n; ++i) {
      std::vector<collab::Op> ops;
      const std::string id = "e" + std::to_string(next_id++);
      ASSERT_FALSE(collab::parse_batch(
          boost::json::parse(R"([{"op":"create","entity":")" + id + R"(","parent":"root"}])"), 10,
          ops));
      bool refused = false;
      e.submit(room, ann, next_id, std::move(ops), [&](collab::Error) { refused = true; });
      ASSERT_FALSE(refused);
    }
  }
  std::int64_t rows(const std::string& where = "1 = 1") {
    std::int64_t n = 0;
    store.write([&](sql::Connection& c) {
      n = c.exec("SELECT count(*) FROM room_snapshots WHERE " + where).rows[0].i64(0);
    });
    return n;
  }
  PersisterOptions opts(const std::string& holder) {
    PersisterOptions o;
    o.holder = holder;
    o.interval = 50ms;
    o.lease = 1min;
    return o;
  }

  store::Database store{sqlite_options()};
  engines::MemoryRoomEngine engine{{}, [n = 0]() mutable { return "ep" + std::to_string(++n); }};
  collab::Member ann{"s-ann", "ann", "Ann", "n1"};
  int next_id = 0;
};

TEST_F(PersisterTest, OneSnapshotPerDirtyRoomPerPassWhateverTheEdits) {
  for (int r = 0; r < 5; ++r) {
    join(engine, "p/r" + std::to_string(r));
    edit(engine, "p/r" + std::to_string(r), 40);
  }
  Persister p(store, engine, opts("w1"));
  auto first = p.pass(false);
  EXPECT_EQ(first.dirty, 5u);
  EXPECT_EQ(first.stored, 5u);
  EXPECT_EQ(rows(), 5);
  EXPECT_EQ(store::Rooms(store).latest_snapshot("p/r0")->seq, 40u);
  auto idle = p.pass(false);  // nothing changed: nothing written
  EXPECT_EQ(idle.dirty, 0u);
  EXPECT_EQ(rows(), 5);
  edit(engine, "p/r1", 3);
  edit(engine, "p/r3", 1);
  auto second = p.pass(false);
  EXPECT_EQ(second.stored, 2u);
  EXPECT_EQ(store::Rooms(store).latest_snapshot("p/r1")->seq, 43u);
  EXPECT_EQ(rows(), 7);
}

TEST_F(PersisterTest, TheStoredSnapshotRestoresTheRoomInANewEngine) {
  join(engine, "p/doc");
  edit(engine, "p/doc", 12);
  Persister(store, engine, opts("w1")).pass(false);

  // A new process: the room is not in its engine, so it comes from the database.
  engines::MemoryRoomEngine fresh{{}, [] { return std::string("new-epoch"); }};
  fresh.set_loader([this](const std::string& room, auto done) {
    auto s = store::Rooms(store).latest_snapshot(room);
    done(s ? std::optional(collab::StoredRoom{s->seq, s->body, s->epoch}) : std::nullopt, "");
  });
  std::promise<collab::JoinResult> p;
  fresh.join("p/doc", ann, std::nullopt, [&](collab::JoinResult r) { p.set_value(std::move(r)); });
  auto r = p.get_future().get();
  ASSERT_FALSE(r.error) << r.error.message;
  EXPECT_EQ(r.seq, 12u);
  EXPECT_EQ(r.epoch, "new-epoch");
  EXPECT_EQ(r.snapshot->at("entities").as_object().size(), 12u);
}

TEST_F(PersisterTest, TwoWorkersNeverWriteOneRoomTwice) {
  for (int r = 0; r < 6; ++r) join(engine, "p/r" + std::to_string(r));
  Persister a(store, engine, opts("a"));
  Persister b(store, engine, opts("b"));
  std::int64_t expected = 0;
  for (int round = 0; round < 5; ++round) {
    for (int r = 0; r < 6; ++r) edit(engine, "p/r" + std::to_string(r), 2);
    expected += 6;
    std::thread ta([&] { a.pass(false); });
    std::thread tb([&] { b.pass(false); });
    ta.join();
    tb.join();
  }
  EXPECT_EQ(rows(), expected);  // keep = 5 per room, 5 rounds: nothing pruned
  // Each room has exactly one writer: the worker that took its lease first.
  store.write([&](sql::Connection& c) {
    auto res = c.exec("SELECT room, count(DISTINCT writer) FROM room_snapshots GROUP BY room");
    ASSERT_EQ(res.rows.size(), 6u);
    for (const auto& row : res.rows) EXPECT_EQ(row.i64(1), 1) << row.str(0);
  });
}

TEST_F(PersisterTest, ARoomLeasedElsewhereStaysDirty) {
  join(engine, "p/x");
  edit(engine, "p/x", 2);
  ASSERT_TRUE(store::Rooms(store).acquire_lease("p/x", "other-worker", 1min));
  Persister p(store, engine, opts("me"));
  auto r = p.pass(false);
  EXPECT_EQ(r.leased_elsewhere, 1u);
  EXPECT_EQ(rows(), 0);
  EXPECT_EQ(engine.dirty_rooms(10)->size(), 1u);
}

// A source whose dirty marks went missing (a gateway that died between its append and its
// mark): the interaction under test is how the persister finds such rooms.
class LostMarks final : public collab::PersistSource {
 public:
  explicit LostMarks(collab::PersistSource& inner) : inner_(inner) {}
  collab::SourceResult<std::vector<collab::RoomVersion>> dirty_rooms(std::size_t) override {
    return std::vector<collab::RoomVersion>();
  }
  collab::SourceResult<std::vector<collab::RoomVersion>> all_rooms() override {
    return inner_.all_rooms();
  }
  collab::SourceResult<std::optional<collab::RoomState>> read_room(const std::string& r) override {
    return inner_.read_room(r);
  }
  collab::SourceResult<void> mark_stored(const std::string& r, std::uint64_t seq) override {
    return inner_.mark_stored(r, seq);
  }

 private:
  collab::PersistSource& inner_;
};

TEST_F(PersisterTest, ReconciliationFindsARoomWhoseMarkWentMissing) {
  join(engine, "p/a");
  join(engine, "p/b");
  edit(engine, "p/a", 4);
  edit(engine, "p/b", 2);
  Persister(store, engine, opts("w")).pass(false);  // both stored
  edit(engine, "p/a", 3);                           // a is now at 7, its mark lost
  LostMarks lost(engine);
  metrics::Registry reg;
  Persister p(store, lost, opts("w"), &reg);
  EXPECT_EQ(p.pass(false).stored, 0u);  // no mark: not seen
  auto r = p.pass(true);
  EXPECT_EQ(r.reconciled, 1u);
  EXPECT_EQ(r.stored, 1u);
  EXPECT_EQ(store::Rooms(store).latest_snapshot("p/a")->seq, 7u);
  EXPECT_NE(reg.render().find("kiln_persist_reconciled_rooms_total 1"), std::string::npos);
}

// An engine that cannot answer for some rooms (Redis failing over, a corrupt room): the
// interaction under test is what the persister does with the errors it is given as values.
class Failing final : public collab::PersistSource {
 public:
  explicit Failing(collab::PersistSource& inner) : inner_(inner) {}
  collab::SourceResult<std::vector<collab::RoomVersion>> dirty_rooms(std::size_t n) override {
    if (listing_down) return down();
    return inner_.dirty_rooms(n);
  }
  collab::SourceResult<std::vector<collab::RoomVersion>> all_rooms() override {
    return inner_.all_rooms();
  }
  collab::SourceResult<std::optional<collab::RoomState>> read_room(const std::string& r) override {
    if (r == unreadable)
      return collab::SourceError{collab::SourceError::Code::unreadable, "corrupt: " + r};
    return inner_.read_room(r);
  }
  collab::SourceResult<void> mark_stored(const std::string& r, std::uint64_t seq) override {
    if (r == unmarkable) return down();
    return inner_.mark_stored(r, seq);
  }
  static collab::SourceError down() {
    return {collab::SourceError::Code::unavailable, "redis: no reply within 30 s"};
  }
  bool listing_down = false;
  std::string unreadable, unmarkable;

 private:
  collab::PersistSource& inner_;
};

TEST_F(PersisterTest, AnEngineThatCannotAnswerLeavesItsRoomsDirtyAndTheOthersStored) {
  for (const char* r : {"p/ok", "p/corrupt", "p/unmarked"}) {
    join(engine, r);
    edit(engine, r, 2);
  }
  Failing source(engine);
  source.unreadable = "p/corrupt";
  source.unmarkable = "p/unmarked";
  Persister p(store, source, opts("w"));
  auto r = p.pass(false);
  EXPECT_EQ(r.dirty, 3u);
  EXPECT_EQ(r.stored, 2u);  // p/ok, and p/unmarked (stored; only its mark failed)
  EXPECT_EQ(r.failed, 2u);
  EXPECT_FALSE(r.database_down);
  EXPECT_EQ(rows("room = 'p/corrupt'"), 0);
  std::set<std::string> dirty;
  for (const auto& d : engine.dirty_rooms(10).value()) dirty.insert(d.room);
  EXPECT_EQ(dirty, (std::set<std::string>{"p/corrupt", "p/unmarked"}));
  // The first error the pass met (rooms come in the engine's order) is the one told.
  EXPECT_TRUE(r.error == "corrupt: p/corrupt" || r.error == "redis: no reply within 30 s")
      << r.error;
  ASSERT_TRUE(p.problem());
  EXPECT_NE(p.problem()->find("(2 rooms waiting): " + r.error), std::string::npos) << *p.problem();
  // The listing itself fails: nothing is tried, the pass says why.
  source.listing_down = true;
  auto none = p.pass(false);
  EXPECT_EQ(none.dirty, 0u);
  EXPECT_EQ(none.failed, 1u);
  EXPECT_EQ(none.error, "redis: no reply within 30 s");
  // Back: the next pass stores what was left and the problem clears.
  source.listing_down = false;
  source.unreadable.clear();
  source.unmarkable.clear();
  auto back = p.pass(false);
  EXPECT_EQ(back.failed, 0u);
  EXPECT_TRUE(engine.dirty_rooms(10).value().empty());
  EXPECT_FALSE(p.problem());
}

TEST_F(PersisterTest, AnUnreachableDatabaseLeavesRoomsDirtyAndSaysSo) {
  join(engine, "p/a");
  edit(engine, "p/a", 3);
  store::DatabaseOptions down;
  down.url = "postgresql://kiln:secret@127.0.0.1:1/kiln";
  down.connect.connect_timeout = 1s;
  store::Database unreachable(down);
  metrics::Registry reg;
  Persister p(unreachable, engine, opts("w"), &reg);
  auto r = p.pass(false);
  EXPECT_EQ(r.failed, 1u);
  EXPECT_TRUE(r.database_down);
  EXPECT_EQ(engine.dirty_rooms(10)->size(), 1u) << "the room must stay dirty";
  auto problem = p.problem();
  ASSERT_TRUE(problem);
  EXPECT_NE(problem->find("1 rooms waiting"), std::string::npos) << *problem;
  EXPECT_EQ(problem->find("secret"), std::string::npos) << "the password leaked: " << *problem;
  const auto text = reg.render();
  EXPECT_NE(text.find("kiln_persist_database_up 0"), std::string::npos) << text;
  EXPECT_NE(text.find("kiln_persist_rooms_total{result=\"failed\"} 1"), std::string::npos);
  // Back: the next pass stores it and the problem clears.
  Persister healthy(store, engine, opts("w"));
  EXPECT_EQ(healthy.pass(false).stored, 1u);
  EXPECT_FALSE(healthy.problem());
}

TEST_F(PersisterTest, StopWithAFinalFlushLeavesNothingDirty) {
  join(engine, "p/a");
  auto o = opts("w");
  o.interval = 1h;  // the loop never gets to it: only the final flush can
  Persister p(store, engine, o);
  p.start();
  edit(engine, "p/a", 5);
  p.stop(true);
  EXPECT_EQ(store::Rooms(store).latest_snapshot("p/a")->seq, 5u);
  EXPECT_TRUE(engine.dirty_rooms(10)->empty());
}

TEST_F(PersisterTest, TheLoopStoresEveryInterval) {
  join(engine, "p/a");
  edit(engine, "p/a", 1);
  metrics::Registry reg;
  Persister p(store, engine, opts("w"), &reg);  // 50 ms
  p.start();
  // Wait (bounded) for the loop's pass to store it.
  for (int i = 0; i < 400 && !engine.dirty_rooms(10)->empty(); ++i)
    std::this_thread::sleep_for(5ms);
  p.stop(false);
  ASSERT_TRUE(engine.dirty_rooms(10)->empty()) << "no pass of the loop stored the room within 2 s";
  EXPECT_EQ(store::Rooms(store).latest_snapshot("p/a")->seq, 1u);
}

}  // namespace
}  // namespace kiln::persist
