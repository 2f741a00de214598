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
  void add_check(std::string name, Check check);
  void set_draining() { draining_.store(true); }
  [[nodiscard]] bool draining() const { return draining_.load(); }

  struct Report {
    bool ready = false;
    std::string json;  // {"status":"ready"|"not_ready"|"draining","checks":{name:"ok"|reason}}
  };
  [[nodiscard]] Report readiness() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<std::string, Check>> checks_;
  std::atomic<bool> draining_{false};
};

}  // namespace kiln
