// The AccessBus conformance suite: what the API and the gateways rely on, run against the
// in-process bus (engines/memory, unit) and the Redis bus (engines/redis, integration, on
// the standalone server and on the Cluster). A harness gives one publishing bus and two
// subscribing ones (other nodes; in process they are all the same bus).
//
//   INSTANTIATE_TEST_SUITE_P(Local, AccessBusConformance, ::testing::Values(factory));
#pragma once

#include "collab/access.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::collab::conformance {

class BusHarness {
 public:
  virtual ~BusHarness() = default;
  virtual AccessBus& publisher() = 0;
  // Subscribers on other nodes: i in [0, 2).
  virtual AccessBus& subscriber(std::size_t i) = 0;
};

struct BusFactory {
  std::string name;
  std::function<std::unique_ptr<BusHarness>()> make;
};
inline void PrintTo(const BusFactory& f, std::ostream* os) {
  *os << f.name;
}

// What one handler received, waited on with a bound (never a sleep).
class Received {
 public:
  void add(const AccessChange& c) {
    std::lock_guard lock(mu_);
    if (c.user.starts_with("probe-")) {
      probed_ = true;
    } else {
      changes_.push_back(c);
    }
    cv_.notify_all();
  }
  bool wait_for(std::size_t n, std::chrono::seconds bound = std::chrono::seconds(10)) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound, [&] { return changes_.size() >= n; });
  }
  bool wait_probe(std::chrono::milliseconds bound) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound, [&] { return probed_; });
  }
  std::vector<AccessChange> changes() {
    std::lock_guard lock(mu_);
    return changes_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool probed_ = false;
  std::vector<AccessChange> changes_;
};

class AccessBusConformance : public ::testing::TestWithParam<BusFactory> {
 protected:
  void SetUp() override {
    harness_ = GetParam().make();
    for (std::size_t i = 0; i < 2; ++i) {
      harness_->subscriber(i).subscribe([r = &received_[i]](const AccessChange& c) { r->add(c); });
    }
  }
  // A subscription is live once a probe published after it arrives (Redis pub/sub drops
  // what is published before SUBSCRIBE is acknowledged): probe until both see one.
  void wait_until_subscribed() {
    for (int attempt = 0; attempt < 100; ++attempt) {
      harness_->publisher().publish(
          {AccessChange::Kind::Revoked, "probe-" + std::to_string(attempt), {}, {}, {}, {}});
      if (received_[0].wait_probe(std::chrono::milliseconds(100)) &&
          received_[1].wait_probe(std::chrono::milliseconds(100)))
        return;
    }
    FAIL() << "the subscribers never received a probe";
  }
  std::unique_ptr<BusHarness> harness_;
  Received received_[2];
};

TEST_P(AccessBusConformance, EveryKindReachesEverySubscriberWithItsFields) {
  wait_until_subscribed();
  using K = AccessChange::Kind;
  const std::vector<AccessChange> sent{
      {K::Role, "ann", "p1", "viewer", "", ""},
      {K::Role, "ann", "p1", "", "", ""},
      {K::ProjectDeleted, "", "p1", "", "", ""},
      {K::Revoked, "bob", "", "", "", ""},
      {K::SceneDeleted, "", "p1", "", "level-1", ""},
      {K::SceneCreated, "", "p1", "", "level-2", ""},
      {K::Role, "ünïcödé \"user\"", "p-2", "owner", "", ""},
      {K::Notify, "ann", "p1", "", "", R"({"kind":"asset","event":"ready","levels":5})"},
  };
  for (const auto& c : sent) harness_->publisher().publish(c);
  for (auto& r : received_) {
    ASSERT_TRUE(r.wait_for(sent.size()));
    const auto got = r.changes();
    ASSERT_EQ(got.size(), sent.size());
    for (std::size_t i = 0; i < sent.size(); ++i) {
      EXPECT_EQ(got[i].kind, sent[i].kind) << i;
      EXPECT_EQ(got[i].user, sent[i].user) << i;
      EXPECT_EQ(got[i].project, sent[i].project) << i;
      EXPECT_EQ(got[i].role, sent[i].role) << i;
      EXPECT_EQ(got[i].scene, sent[i].scene) << i;
      EXPECT_EQ(got[i].payload, sent[i].payload) << i;
    }
  }
}

// A member removed and added again must end added on every gateway: one publisher's
// changes arrive in the order published, none lost on a healthy connection.
TEST_P(AccessBusConformance, OnePublishersChangesArriveInOrder) {
  wait_until_subscribed();
  constexpr std::size_t kChanges = 500;
  for (std::size_t i = 0; i < kChanges; ++i) {
    harness_->publisher().publish(
        {AccessChange::Kind::Role, "u" + std::to_string(i), "p", i % 2 ? "editor" : "", "", ""});
  }
  for (auto& r : received_) {
    ASSERT_TRUE(r.wait_for(kChanges)) << r.changes().size() << " of " << kChanges;
    const auto got = r.changes();
    for (std::size_t i = 0; i < kChanges; ++i) {
      ASSERT_EQ(got[i].user, "u" + std::to_string(i)) << "out of order at " << i;
      ASSERT_EQ(got[i].role, i % 2 ? "editor" : "");
    }
  }
}

TEST_P(AccessBusConformance, EveryHandlerOfANodeGetsEachChange) {
  Received second;
  harness_->subscriber(0).subscribe([&second](const AccessChange& c) { second.add(c); });
  wait_until_subscribed();
  harness_->publisher().publish({AccessChange::Kind::Revoked, "ann", "", "", "", {}});
  ASSERT_TRUE(second.wait_for(1));
  ASSERT_TRUE(received_[0].wait_for(1));
  EXPECT_EQ(second.changes()[0].user, "ann");
}

TEST_P(AccessBusConformance, ClosingTwiceAndPublishingAfterCloseAreHarmless) {
  harness_->subscriber(1).close();
  harness_->subscriber(1).close();
  harness_->publisher().close();
  harness_->publisher().publish({AccessChange::Kind::Revoked, "ann", "", "", "", {}});
}

}  // namespace kiln::collab::conformance
