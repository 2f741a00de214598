// Liveness and readiness. Components register readiness checks; `/readyz` runs them.
// A check must be cheap and must not block: it reports state the component already
// holds (a connection's last known status), it does not open a connection itself.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

class Health {
 public:
  // The check returns nullopt when healthy, or a short reason when not.
  using Check = std::function<std::optional<std::string>()>;
  // A critical check failing makes the node not ready (503). A non-critical one (the node
  // still does its main job, e.g. editing while the database is away) is reported and
  // turns the status to "degraded", still 200.
  void add_check(std::string name, Check check, bool critical = true);
  void set_draining() { draining_.store(true); }
  [[nodiscard]] bool draining() const { return draining_.load(); }

  struct Report {
    bool ready = false;
    // {"status":"ready"|"degraded"|"not_ready"|"draining","checks":{name:"ok"|reason}}
    std::string json;
  };
  [[nodiscard]] Report readiness() const;

 private:
  mutable std::mutex mu_;
  struct Entry {
    std::string name;
    Check check;
    bool critical;
  };
  std::vector<Entry> checks_;
  std::atomic<bool> draining_{false};
};

}  // namespace kiln
