// The store conformance suite: every behaviour Kiln relies on, run against SQLite
// (store_test.cpp) and PostgreSQL through PgBouncer (store_itest.cpp). Include once per
// test binary, after defining a `StoreFactory` instantiation:
//   INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformance, ::testing::Values(factory));
#pragma once

#include "store/database.hpp"
#include "store/projects.hpp"
#include "store/rooms.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <thread>

namespace kiln::store {

// Makes the options of a fresh, empty database for one test.
struct StoreFactory {
  std::string name;
  std::function<DatabaseOptions()> fresh;
};
inline void PrintTo(const StoreFactory& f, std::ostream* os) {
  *os << f.name;
}

class StoreConformance : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override {
    options_ = GetParam().fresh();
    store_ = std::make_unique<Database>(options_);
    store_->migrate();
    rooms_ = std::make_unique<Rooms>(*store_);
    projects_ = std::make_unique<Projects>(*store_);
  }
  RoomSnapshot snap(const std::string& room, std::uint64_t seq) {
    return RoomSnapshot{room, seq, "e1", R"({"entities":{"n)" + std::to_string(seq) + R"(":{}}})",
                        0};
  }
  std::size_t snapshot_rows(const std::string& room) {
    std::size_t n = 0;
    store_->write([&](Connection& c) {
      n = static_cast<std::size_t>(
          c.exec("SELECT count(*) FROM room_snapshots WHERE room = $1", {room}).rows[0].i64(0));
    });
    return n;
  }
  DatabaseOptions options_;
  std::unique_ptr<Database> store_;
  std::unique_ptr<Rooms> rooms_;
  std::unique_ptr<Projects> projects_;
};

TEST_P(StoreConformance, MigrationsApplyOnceAndRecordTheirVersion) {
  EXPECT_EQ(store_->schema_version(), Database::latest_schema_version());
  EXPECT_EQ(store_->migrate(), 0);  // nothing left to apply
  Database again(options_);
  EXPECT_EQ(again.migrate(), 0);
  EXPECT_EQ(again.schema_version(), Database::latest_schema_version());
}

TEST_P(StoreConformance, ConcurrentStartersApplyEachMigrationExactlyOnce) {
  auto opts = GetParam().fresh();  // an empty database
  std::atomic<int> applied{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      try {
        Database s(opts);
        applied += s.migrate();
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(applied.load(), Database::latest_schema_version());
}

TEST_P(StoreConformance, ASchemaNewerThanTheBinaryIsRefused) {
  store_->write([](Connection& c) {
    c.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 0)");
  });
  try {
    store_->migrate();
    FAIL() << "migrate() accepted a newer schema";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("newer than this kiln"), std::string::npos) << e.what();
  }
}

TEST_P(StoreConformance, ALeaseHasOneHolderUntilItExpires) {
  EXPECT_TRUE(rooms_->acquire_lease("p/s", "worker-a", std::chrono::minutes(1)));
  EXPECT_FALSE(rooms_->acquire_lease("p/s", "worker-b", std::chrono::minutes(1)));
  EXPECT_TRUE(rooms_->acquire_lease("p/s", "worker-a", std::chrono::minutes(1)));  // renewal
  EXPECT_TRUE(rooms_->acquire_lease("p/t", "worker-b", std::chrono::minutes(1)));  // other room
  // A lease that expires at once (ttl 0) can be taken over.
  EXPECT_TRUE(rooms_->acquire_lease("p/u", "worker-a", std::chrono::milliseconds(0)));
  EXPECT_TRUE(rooms_->acquire_lease("p/u", "worker-b", std::chrono::minutes(1)));
}

TEST_P(StoreConformance, SnapshotsAreStoredOnlyWhenNewer) {
  const auto ttl = std::chrono::minutes(1);
  ASSERT_TRUE(rooms_->acquire_lease("p/s", "w", ttl));
  EXPECT_EQ(rooms_->save_snapshot(snap("p/s", 10), "w", ttl, 5), SaveResult::Stored);
  EXPECT_EQ(rooms_->save_snapshot(snap("p/s", 10), "w", ttl, 5), SaveResult::NotNewer);
  EXPECT_EQ(rooms_->save_snapshot(snap("p/s", 7), "w", ttl, 5), SaveResult::NotNewer);
  EXPECT_EQ(rooms_->save_snapshot(snap("p/s", 11), "w", ttl, 5), SaveResult::Stored);
  auto latest = rooms_->latest_snapshot("p/s");
  ASSERT_TRUE(latest);
  EXPECT_EQ(latest->seq, 11u);
  EXPECT_EQ(latest->body, snap("p/s", 11).body);
  EXPECT_EQ(latest->epoch, "e1");
  EXPECT_GT(latest->stored_at, 0);
  EXPECT_FALSE(rooms_->latest_snapshot("p/none"));
  EXPECT_EQ(snapshot_rows("p/s"), 2u);
}

TEST_P(StoreConformance, OnlyTheNewestSnapshotsAreKept) {
  const auto ttl = std::chrono::minutes(1);
  ASSERT_TRUE(rooms_->acquire_lease("p/s", "w", ttl));
  for (std::uint64_t seq = 1; seq <= 6; ++seq)
    ASSERT_EQ(rooms_->save_snapshot(snap("p/s", seq), "w", ttl, 3), SaveResult::Stored);
  EXPECT_EQ(snapshot_rows("p/s"), 3u);
  EXPECT_EQ(rooms_->latest_snapshot("p/s")->seq, 6u);
}

TEST_P(StoreConformance, AWorkerThatLostItsLeaseWritesNothing) {
  ASSERT_TRUE(rooms_->acquire_lease("p/s", "slow", std::chrono::milliseconds(0)));
  ASSERT_TRUE(rooms_->acquire_lease("p/s", "fast", std::chrono::minutes(1)));
  EXPECT_EQ(rooms_->save_snapshot(snap("p/s", 5), "slow", std::chrono::minutes(1), 5),
            SaveResult::LeaseLost);
  EXPECT_EQ(snapshot_rows("p/s"), 0u);
  // A worker that never held the lease cannot write either.
  EXPECT_EQ(rooms_->save_snapshot(snap("p/s", 5), "stranger", std::chrono::minutes(1), 5),
            SaveResult::LeaseLost);
  EXPECT_EQ(rooms_->save_snapshot(snap("p/s", 5), "fast", std::chrono::minutes(1), 5),
            SaveResult::Stored);
}

TEST_P(StoreConformance, RacingWorkersNeverDoubleASnapshot) {
  // Two workers flush the same room over and over; each round only the lease holder writes.
  const auto ttl = std::chrono::minutes(1);
  std::atomic<int> stored{0};
  std::atomic<std::uint64_t> seq{0};
  auto worker = [&](const std::string& me) {
    for (int i = 0; i < 40; ++i) {
      const auto s = ++seq;
      try {
        if (!rooms_->acquire_lease("p/race", me, ttl)) continue;
        if (rooms_->save_snapshot(snap("p/race", s), me, ttl, 1000) == SaveResult::Stored) ++stored;
      } catch (const Error& e) {
        ADD_FAILURE() << e.what();
      }
    }
  };
  std::thread a(worker, "a"), b(worker, "b");
  a.join();
  b.join();
  EXPECT_EQ(snapshot_rows("p/race"), static_cast<std::size_t>(stored.load()));
  std::set<std::string> writers;
  store_->write([&](Connection& c) {
    for (const auto& r : c.exec("SELECT DISTINCT writer FROM room_snapshots").rows)
      writers.insert(r.str(0));
  });
  EXPECT_EQ(writers.size(), 1u) << "the lease let two workers write one room";
}

TEST_P(StoreConformance, StoredSeqsCoverEveryRoomAsked) {
  const auto ttl = std::chrono::minutes(1);
  std::vector<std::string> rooms;
  for (int i = 0; i < 450; ++i) rooms.push_back("p/r" + std::to_string(i));
  store_->write([&](Connection& c) {
    for (int i = 0; i < 450; i += 2) {
      c.exec(
          "INSERT INTO room_snapshots (room, seq, epoch, body, bytes, stored_at, writer) VALUES "
          "($1, $2, 'e', '{}', 2, 0, 'w')",
          {rooms[static_cast<std::size_t>(i)], std::int64_t{i + 1}});
    }
  });
  ASSERT_TRUE(rooms_->acquire_lease("p/r1", "w", ttl));
  auto seqs = rooms_->stored_seqs(rooms);
  EXPECT_EQ(seqs.size(), 225u);
  EXPECT_EQ(seqs.at("p/r0"), 1u);
  EXPECT_EQ(seqs.at("p/r448"), 449u);
  EXPECT_EQ(seqs.count("p/r1"), 0u);
}

TEST_P(StoreConformance, ProjectsMembersAndScenes) {
  projects_->upsert_user("u1", "Ada");
  projects_->upsert_user("u1", "Ada L.");  // an upsert, not a conflict
  projects_->create_project(Project{"proj-b", "Beta", "u1", 0, {}}, "u1");
  projects_->create_project(Project{"proj-a", "Alpha", "u1", 0, {}}, "u1");
  projects_->create_project(Project{"proj-c", "Gamma", "u2", 0, {}}, "u2");
  projects_->set_member("proj-c", "u1", "viewer");
  try {
    projects_->create_project(Project{"proj-a", "Again", "u1", 0, {}}, "u1");
    FAIL() << "a duplicate project id was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::Conflict) << e.what();
  }
  try {
    projects_->set_member("proj-a", "u3", "admin");
    FAIL() << "an unknown role was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::Conflict) << e.what();
  }
  auto mine = projects_->list_projects("u1", {});
  ASSERT_EQ(mine.size(), 3u);
  EXPECT_EQ(mine[0].id, "proj-a");
  EXPECT_EQ(mine[0].role, "owner");
  EXPECT_EQ(mine[2].id, "proj-c");
  EXPECT_EQ(mine[2].role, "viewer");
  auto page = projects_->list_projects("u1", {}, 2);
  ASSERT_EQ(page.size(), 2u);
  auto rest = projects_->list_projects("u1", {}, 2, page.back().id);
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].id, "proj-c");
  EXPECT_EQ(projects_->get_project("proj-b", {})->name, "Beta");
  EXPECT_FALSE(projects_->get_project("nope", {}));
  projects_->create_scene(SceneRow{"proj-a", "main", "Main", 0});
  projects_->create_scene(SceneRow{"proj-a", "level-2", "Level 2", 0});
  auto scenes = projects_->list_scenes("proj-a", {});
  ASSERT_EQ(scenes.size(), 2u);
  EXPECT_EQ(scenes[0].id, "level-2");
  try {
    projects_->create_scene(SceneRow{"missing-project", "s", "S", 0});
    FAIL() << "a scene of a missing project was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::Conflict) << e.what();
  }
}

TEST_P(StoreConformance, ParametersAreNeverSplicedIntoSql) {
  const std::string hostile = "x'); DROP TABLE users; --\"\\ \xC3\xA9";
  projects_->upsert_user("u-hostile", hostile);
  projects_->create_project(Project{"p-h", hostile, "u-hostile", 0, {}}, "u-hostile");
  EXPECT_EQ(projects_->get_project("p-h", {})->name, hostile);
  projects_->upsert_user("u2", "still works");  // the users table is still there
}

TEST_P(StoreConformance, AFailedTransactionLeavesNothingBehind) {
  try {
    store_->write([](Connection& c) {
      c.exec("INSERT INTO users (id, name, created_at) VALUES ('half', 'made', 0)");
      throw std::runtime_error("interrupted");
    });
  } catch (const std::runtime_error&) {
  }
  std::size_t n = 99;
  store_->write([&](Connection& c) {
    n = static_cast<std::size_t>(
        c.exec("SELECT count(*) FROM users WHERE id = 'half'").rows[0].i64(0));
  });
  EXPECT_EQ(n, 0u);
}

TEST_P(StoreConformance, AProjectAlwaysKeepsAnOwner) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  Receipt r;
  EXPECT_EQ(projects_->change_member("p", "ann", "editor", r), MemberChange::LastOwner);
  EXPECT_EQ(projects_->remove_member("p", "ann", r), MemberChange::LastOwner);
  EXPECT_EQ(projects_->change_member("p", "bob", "owner", r), MemberChange::Done);
  EXPECT_EQ(projects_->change_member("p", "ann", "viewer", r), MemberChange::Done);  // bob owns
  EXPECT_EQ(projects_->member_role("p", "ann", r), "viewer");
  EXPECT_EQ(projects_->remove_member("p", "bob", r), MemberChange::LastOwner);
  EXPECT_EQ(projects_->remove_member("p", "ann", r), MemberChange::Done);
  EXPECT_EQ(projects_->remove_member("p", "ann", r), MemberChange::NotFound);
  EXPECT_EQ(projects_->change_member("nope", "ann", "viewer", r), MemberChange::NotFound);
  auto members = projects_->list_members("p", r);
  ASSERT_EQ(members.size(), 1u);
  EXPECT_EQ(members[0].user_id, "bob");
}

TEST_P(StoreConformance, TwoOwnersDemotingEachOtherAtOnceLeaveOne) {
  for (int round = 0; round < 10; ++round) {
    const std::string p = "race" + std::to_string(round);
    projects_->create_project(Project{p, "P", "a", 0, {}}, "a");
    Receipt r;
    ASSERT_EQ(projects_->change_member(p, "b", "owner", r), MemberChange::Done);
    std::atomic<int> done{0};
    auto demote = [&](const std::string& who) {
      Receipt rr;
      if (projects_->change_member(p, who, "editor", rr) == MemberChange::Done) ++done;
    };
    std::thread x(demote, "a"), y(demote, "b");
    x.join();
    y.join();
    EXPECT_EQ(done.load(), 1) << "exactly one demotion may win";
    std::size_t owners = 0;
    for (const auto& m : projects_->list_members(p, {})) owners += m.role == "owner";
    EXPECT_EQ(owners, 1u);
  }
}

TEST_P(StoreConformance, DeletedProjectsAndScenesDisappear) {
  projects_->create_project(Project{"p", "P", "ann", 0, {}}, "ann");
  projects_->create_scene(SceneRow{"p", "s1", "One", 0, 0});
  projects_->create_scene(SceneRow{"p", "s2", "Two", 0, 0});
  bool found = false;
  projects_->rename_scene("p", "s1", "Uno", found);
  EXPECT_TRUE(found);
  EXPECT_EQ(projects_->get_scene("p", "s1", {})->name, "Uno");
  projects_->delete_scene("p", "s2", found);
  EXPECT_TRUE(found);
  EXPECT_FALSE(projects_->get_scene("p", "s2", {}));
  projects_->delete_scene("p", "s2", found);
  EXPECT_FALSE(found);
  projects_->rename_project("p", "Renamed", found);
  EXPECT_TRUE(found);
  EXPECT_EQ(projects_->roles_of("ann").at("p"), "owner");
  projects_->delete_project("p", found);
  EXPECT_TRUE(found);
  EXPECT_FALSE(projects_->get_project("p", {}));
  EXPECT_EQ(projects_->member_role("p", "ann", {}), "");
  EXPECT_TRUE(projects_->roles_of("ann").empty());
  EXPECT_FALSE(projects_->get_scene("p", "s1", {}));
  projects_->rename_project("p", "Again", found);
  EXPECT_FALSE(found);
}

TEST_P(StoreConformance, RevokingTokensRaisesTheUsersTokenVersion) {
  projects_->upsert_user("ann", "Ann");
  EXPECT_EQ(projects_->get_user("ann")->token_version, 0);
  EXPECT_EQ(projects_->revoke_tokens("ann"), 1);
  EXPECT_EQ(projects_->revoke_tokens("ann"), 2);
  EXPECT_EQ(projects_->get_user("ann")->token_version, 2);
  EXPECT_EQ(projects_->get_user("ann")->name, "Ann");
  EXPECT_EQ(projects_->revoke_tokens("ghost"), 1);  // a user never seen before
  EXPECT_FALSE(projects_->get_user("nobody"));
}

}  // namespace kiln::store
