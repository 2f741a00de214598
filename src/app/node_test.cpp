// The node's shared parts: periodic tasks end with the node. A task scheduled on the event
// loop must not run once the node has stopped its tasks, even if its timer is already due:
// the modules it calls into are gone by then (an API sweep posting to a destroyed thread
// pool hung `kiln serve`'s shutdown).
#include "app/modules.hpp"
#include "app/settings.hpp"

#include <gtest/gtest.h>

#include <atomic>

namespace kiln::app {
namespace {

TEST(Node, APeriodicTaskNeverRunsAfterTheNodeStopsItsTasks) {
  const auto cfg = config::Loader(schema()).finish();
  Node node(cfg, "serve");
  node.runtime = std::make_unique<Runtime>(1);
  std::atomic<int> runs{0};
  node.every(std::chrono::milliseconds(0), std::chrono::hours(1), [&] { ++runs; });
  node.stop_periodic();
  node.runtime->run_ready_handlers();  // as run_node does after the loop: its timer is due
  EXPECT_EQ(runs.load(), 0) << "a periodic task ran after the node stopped its tasks";
}

TEST(Node, APeriodicTaskRunsUntilThen) {
  const auto cfg = config::Loader(schema()).finish();
  Node node(cfg, "serve");
  node.runtime = std::make_unique<Runtime>(1);
  std::atomic<int> runs{0};
  node.every(std::chrono::milliseconds(0), std::chrono::hours(1), [&] {
    ++runs;
    node.runtime->stop();
  });
  node.runtime->run();
  EXPECT_EQ(runs.load(), 1);
}

}  // namespace
}  // namespace kiln::app
