// The access cache against a loader the test answers by hand (the interaction under test:
// when the database is read, and what is decided while it is slow, down or changing).
#include "gateway/access_cache.hpp"

#include <gtest/gtest.h>

namespace kiln::gateway {
namespace {

using collab::Code;
using namespace std::chrono_literals;

struct AccessCacheTest : ::testing::Test {
  using Answer = std::function<void(std::optional<ProjectAccess>, std::string)>;
  AccessCache::Clock::time_point now{};
  std::vector<std::pair<std::string, Answer>> reads;  // unanswered database reads
  ProjectAccess db;                                   // what the database holds for "p"
  bool db_down = false;
  AccessCacheOptions options() {
    AccessCacheOptions o;
    o.ttl = 5s;
    o.stale_max = 60s;
    return o;
  }
  AccessCache cache{options(), [this](const std::string& p, Answer a) { reads.emplace_back(p, a); },
                    [this] { return now; }};

  AccessCacheTest() {
    db.live = true;
    db.roles = {{"ann", auth::Role::Editor}};
    db.scenes = {"s"};
  }
  // Answers every pending read with what the database holds now.
  void answer() {
    auto pending = std::move(reads);
    reads.clear();
    for (auto& [p, a] : pending) {
      if (db_down) {
        a(std::nullopt, "connection refused");
      } else {
        a(db, "");
      }
    }
  }
  // The decision if it came at once; one that comes later (after a read) lands in a slot
  // kept by the fixture, never in this frame.
  // Answers reads until none is pending (a read can make another start: joins that came
  // while it ran are decided by the next).
  void answer_all() {
    for (int i = 0; i < 10 && !reads.empty(); ++i) answer();
    ASSERT_TRUE(reads.empty());
  }
  std::optional<AccessDecision> decide(const std::string& user, const std::string& room) {
    auto slot = std::make_shared<std::optional<AccessDecision>>();
    slots.push_back(slot);
    cache.decide(user, room, [slot](AccessDecision d) { *slot = std::move(d); });
    return *slot;
  }
  std::vector<std::shared_ptr<std::optional<AccessDecision>>> slots;
};

TEST_F(AccessCacheTest, AFreshEntryDecidesWithoutReadingAgain) {
  auto d = decide("ann", "p/s");
  EXPECT_FALSE(d) << "the first join waits for the database";
  answer();
  ASSERT_EQ(cache.stats().loads, 1u);
  now += 4s;
  d = decide("ann", "p/s");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->code, Code::Ok);
  EXPECT_EQ(d->role, auth::Role::Editor);
  EXPECT_EQ(cache.stats().loads, 1u);
  EXPECT_EQ(cache.stats().hits, 1u);
}

TEST_F(AccessCacheTest, AnOldEntryIsReadAgain) {
  decide("ann", "p/s");
  answer();
  db.roles.erase("ann");
  now += 5s;  // the TTL
  auto d = decide("ann", "p/s");
  EXPECT_FALSE(d);
  answer();
  EXPECT_EQ(cache.stats().loads, 2u);
}

// A join that arrives while a read runs waits for the next one: the running read may have
// begun before the change that allows the join (found under load: a scene created a
// moment before, its bus message not yet here, was refused as not_found).
TEST_F(AccessCacheTest, AJoinDuringARunningReadIsDecidedByTheNextOne) {
  db.scenes.clear();
  std::optional<AccessDecision> early;
  cache.decide("ann", "p/s", [&](AccessDecision x) { early = x; });  // read 1 starts
  ASSERT_EQ(reads.size(), 1u);
  auto running = std::move(reads[0].second);
  reads.clear();
  std::optional<AccessDecision> late;
  cache.decide("ann", "p/new", [&](AccessDecision x) { late = x; });  // arrives during read 1
  running(db, "");  // read 1 answers from before "new" existed
  EXPECT_EQ(early.value().code, Code::NotFound);
  EXPECT_FALSE(late) << "not decided by a read older than the join";
  db.scenes = {"s", "new"};
  answer();
  ASSERT_TRUE(late);
  EXPECT_EQ(late->code, Code::Ok);
}

TEST_F(AccessCacheTest, ConcurrentJoinsShareReads) {
  std::vector<AccessDecision> got;
  for (int i = 0; i < 10; ++i)
    cache.decide("ann", "p/s", [&](AccessDecision d) { got.push_back(d); });
  EXPECT_EQ(reads.size(), 1u) << "one read at a time per project";
  answer();
  EXPECT_EQ(got.size(), 1u) << "the others came while it ran: the next read decides them";
  answer();
  EXPECT_EQ(got.size(), 10u);
  EXPECT_EQ(cache.stats().loads, 2u);
}

// A refusal is never taken from a read older than the join: a member added (or a scene
// created) a moment ago, before the bus told this node, is let in.
TEST_F(AccessCacheTest, ARefusalComesOnlyFromAReadBegunAfterTheJoin) {
  decide("ann", "p/s");
  answer();
  db.roles["bob"] = auth::Role::Viewer;  // added right after the entry was read
  auto d = decide("bob", "p/s");
  EXPECT_FALSE(d) << "read again, not refused from the entry";
  answer();
  std::optional<AccessDecision> got;
  cache.decide("bob", "p/s", [&](AccessDecision x) { got = x; });
  ASSERT_TRUE(got) << "a fresh entry that has bob decides at once";
  EXPECT_EQ(got->role, auth::Role::Viewer);
  EXPECT_EQ(cache.stats().loads, 2u);
}

// However many refused joins arrive, one read per project runs at a time; those that came
// during a read share the next one.
TEST_F(AccessCacheTest, RefusedJoinsShareReads) {
  decide("ann", "p/s");
  answer();
  int answered = 0;
  for (int i = 0; i < 100; ++i)
    cache.decide("eve", "p/s", [&](AccessDecision x) {
      EXPECT_EQ(x.code, Code::Forbidden);
      ++answered;
    });
  EXPECT_EQ(reads.size(), 1u);
  answer();  // the first refusal's read; the 99 that came while it ran need one begun later
  EXPECT_EQ(answered, 1);
  EXPECT_EQ(reads.size(), 1u);
  answer();
  EXPECT_EQ(answered, 100);
  EXPECT_EQ(cache.stats().loads, 3u);
  EXPECT_TRUE(reads.empty());
}

TEST_F(AccessCacheTest, RoomsAreScenesOfLiveProjects) {
  auto decided = [&](const char* user, const char* room) {
    std::optional<AccessDecision> d;
    cache.decide(user, room, [&](AccessDecision x) { d = x; });
    answer();
    return d.value().code;
  };
  EXPECT_EQ(decided("ann", "p/s"), Code::Ok);
  EXPECT_EQ(decided("ann", "p/none"), Code::NotFound);
  EXPECT_EQ(decided("eve", "p/none"), Code::Forbidden) << "no scene list for outsiders";
  db.live = false;
  db.roles.clear();
  db.scenes.clear();
  EXPECT_EQ(decided("ann", "p/s"), Code::Ok) << "fresh entry (the change was not announced)";
  cache.reload("p", [](AccessCache::Shared) {});
  answer();
  EXPECT_EQ(decided("ann", "p/s"), Code::Forbidden);
}

TEST_F(AccessCacheTest, DuringAnOutageAnEntryUpToStaleMaxStillDecides) {
  decide("ann", "p/s");
  answer();
  db_down = true;
  now += 30s;
  std::optional<AccessDecision> d;
  cache.decide("ann", "p/s", [&](AccessDecision x) { d = x; });
  answer();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->code, Code::Ok);
  EXPECT_EQ(cache.stats().stale, 1u);
  now += 31s;  // past stale_max
  d.reset();
  cache.decide("ann", "p/s", [&](AccessDecision x) { d = x; });
  answer();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->code, Code::Unavailable);
  EXPECT_GT(d->after_ms, 0);
}

// A refusal needs a read that began after the join: when that read fails, the old entry's
// "no" is not given (the scene may have been created since); the join is told to retry.
TEST_F(AccessCacheTest, DuringAnOutageAnOldEntryNeverRefuses) {
  decide("ann", "p/s");
  answer();
  db_down = true;
  std::optional<AccessDecision> d;
  cache.decide("ann", "p/created-meanwhile", [&](AccessDecision x) { d = x; });
  answer();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->code, Code::Unavailable);
  d.reset();
  cache.decide("eve", "p/s", [&](AccessDecision x) { d = x; });
  answer();
  EXPECT_EQ(d.value().code, Code::Unavailable);
}

TEST_F(AccessCacheTest, WithNothingCachedAnOutageRefusesAsUnavailable) {
  db_down = true;
  std::optional<AccessDecision> d;
  cache.decide("ann", "p/s", [&](AccessDecision x) { d = x; });
  answer();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->code, Code::Unavailable);
  EXPECT_EQ(cache.stats().refused, 1u);
}

// A read that started before a change was announced may have missed it: its answer is not
// kept, another read follows, and whoever waited gets the second.
TEST_F(AccessCacheTest, AReadRunningWhenAChangeIsAnnouncedIsReadAgain) {
  std::optional<AccessDecision> d;
  cache.decide("ann", "p/s", [&](AccessDecision x) { d = x; });
  ASSERT_EQ(reads.size(), 1u);
  auto first = std::move(reads[0].second);
  reads.clear();
  AccessCache::Shared reloaded;
  cache.reload("p", [&](AccessCache::Shared a) { reloaded = a; });  // ann removed meanwhile
  EXPECT_TRUE(reads.empty()) << "one read at a time per project";
  first(db, "");  // the old read answers with ann still a member
  ASSERT_TRUE(d) << "the join, which came before the change, gets that read";
  EXPECT_FALSE(reloaded) << "the change waits for a read that began after it";
  ASSERT_EQ(reads.size(), 1u);
  db.roles.erase("ann");
  answer();
  ASSERT_TRUE(reloaded);
  EXPECT_EQ(reloaded->roles.count("ann"), 0u);
  EXPECT_EQ(decide("ann", "p/s"), std::nullopt) << "a refusal is read again";
  answer();
}

// Once a change is announced, nobody is let in from the entry read before it, however
// fresh: a removed member's new connection waits for the read and is refused.
TEST_F(AccessCacheTest, AJoinAfterAnAnnouncedChangeWaitsForItsRead) {
  decide("ann", "p/s");
  answer();
  db.roles.erase("ann");
  cache.reload("p", [](AccessCache::Shared) {});
  EXPECT_FALSE(decide("ann", "p/s")) << "not from the entry read before the change";
  std::optional<AccessDecision> d;
  cache.decide("ann", "p/s", [&](AccessDecision x) { d = x; });
  answer_all();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->code, Code::Forbidden);
}

// Reads are numbered over every project, and announce() names the first number that
// reflects the change: what a session compares a read against before letting it undo an
// announced change (the e2e suite once saw a read begun before a promotion answer after
// it, and demote the member again).
TEST_F(AccessCacheTest, AnAnnouncementNamesTheFirstReadThatReflectsIt) {
  std::optional<AccessDecision> d;
  cache.decide("ann", "p/s", [&](AccessDecision x) { d = x; });
  ASSERT_EQ(reads.size(), 1u);
  auto first = std::move(reads[0].second);
  reads.clear();
  const auto known_from = cache.announce("p");
  first(db, "");
  ASSERT_TRUE(d);
  EXPECT_LT(d->read, known_from) << "the read in flight began before the change";
  EXPECT_FALSE(decide("ann", "p/s")) << "nobody let in from the entry before the change";
  answer_all();
  AccessCache::Shared reloaded;
  cache.reload("p", [&](AccessCache::Shared a) { reloaded = a; });
  answer_all();
  ASSERT_TRUE(reloaded);
  EXPECT_GE(reloaded->read, known_from);
  // Swept and read again: the numbers go on growing (sessions keep what they compared).
  now += 10s;
  cache.sweep({});
  ASSERT_EQ(cache.size(), 0u);
  std::optional<AccessDecision> later;
  cache.decide("ann", "p/s", [&](AccessDecision x) { later = x; });
  answer_all();
  ASSERT_TRUE(later);
  EXPECT_GT(later->read, reloaded->read);
}

TEST_F(AccessCacheTest, AFailedReloadKeepsTheEntryAndSaysSo) {
  decide("ann", "p/s");
  answer();
  db_down = true;
  bool called = false;
  cache.reload("p", [&](AccessCache::Shared a) {
    called = true;
    EXPECT_FALSE(a);
  });
  answer();
  EXPECT_TRUE(called);
  auto d = decide("ann", "p/s");
  ASSERT_TRUE(d) << "a fresh entry lets in without a read";
  EXPECT_EQ(d->code, Code::Ok) << "the old entry still decides";
}

TEST_F(AccessCacheTest, SweepDropsWhatNoSessionUses) {
  decide("ann", "p/s");
  decide("ann", "q/s");
  answer();
  now += 5s;
  cache.sweep({"p"});
  EXPECT_EQ(cache.size(), 1u);
}

}  // namespace
}  // namespace kiln::gateway
