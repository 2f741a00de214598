// The database adapter as a QueueHarness for the conformance suite (SQLite and PostgreSQL).
#pragma once

#include "jobs/database_queue.hpp"
#include "jobs/test_harness.hpp"
#include "store/database.hpp"
#include "store/test_sqlite.hpp"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

namespace kiln::jobs {

class DatabaseHarness final : public QueueHarness {
 public:
  explicit DatabaseHarness(store::DatabaseOptions o) : db_(std::move(o)) {
    db_.migrate();
    DatabaseQueueOptions qo;
    qo.policies["t.flaky"] =
        RetryPolicy{3, std::chrono::milliseconds(10'000), std::chrono::milliseconds(15'000)};
    qo.random = [this] { return jitter.load(); };
    qo.clock_offset_ms = [this] { return offset_ms.load(); };
    queue_ = std::make_unique<DatabaseQueue>(db_, std::move(qo));
  }
  JobQueue& queue() override { return *queue_; }

 private:
  store::Database db_;
  std::unique_ptr<DatabaseQueue> queue_;
};

// A new SQLite database file for one test (removed when the test process exits).
inline store::DatabaseOptions temp_sqlite(const std::string& name) {
  return store::test::temp_sqlite(name);
}

inline std::unique_ptr<QueueHarness> make_database_harness(store::DatabaseOptions o) {
  return std::make_unique<DatabaseHarness>(std::move(o));
}

}  // namespace kiln::jobs
