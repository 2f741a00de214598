#include "platform/health.hpp"
#include "platform/thread_pool.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

#include <atomic>
#include <future>

namespace kiln {
namespace {

std::string status(const Health::Report& r) {
  return std::string(boost::json::parse(r.json).at("status").as_string());
}

TEST(Health, ACriticalCheckFailingMakesTheNodeNotReady) {
  Health h;
  std::optional<std::string> problem;
  h.add_check("db", [&] { return problem; });
  EXPECT_TRUE(h.readiness().ready);
  EXPECT_EQ(status(h.readiness()), "ready");
  problem = "unreachable";
  auto r = h.readiness();
  EXPECT_FALSE(r.ready);
  EXPECT_EQ(status(r), "not_ready");
  EXPECT_EQ(boost::json::parse(r.json).at("checks").at("db").as_string(), "unreachable");
}

TEST(Health, ANonCriticalCheckFailingIsDegradedButReady) {
  Health h;
  std::optional<std::string> problem = "persisting fails";
  h.add_check(
      "persistence", [&] { return problem; }, /*critical=*/false);
  auto r = h.readiness();
  EXPECT_TRUE(r.ready);
  EXPECT_EQ(status(r), "degraded");
  h.set_draining();
  EXPECT_FALSE(h.readiness().ready);
  EXPECT_EQ(status(h.readiness()), "draining");
}

TEST(ThreadPool, RunsEveryTaskAndRefusesBeyondItsQueue) {
  std::promise<void> gate;
  auto opened = gate.get_future().share();
  std::atomic<int> ran{0};
  {
    ThreadPool pool(1, 2);
    std::promise<void> started;
    ASSERT_TRUE(pool.post([&] {
      started.set_value();
      opened.wait();  // holds the only thread
      ++ran;
    }));
    started.get_future().wait();
    EXPECT_TRUE(pool.post([&] { ++ran; }));
    EXPECT_TRUE(pool.post([&] { ++ran; }));
    EXPECT_FALSE(pool.post([&] { ++ran; })) << "a full queue refuses";
    gate.set_value();
  }  // the destructor runs what was queued
  EXPECT_EQ(ran.load(), 3);
}

}  // namespace
}  // namespace kiln
