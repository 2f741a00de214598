#include "platform/health.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace kiln {

void Health::add_check(std::string name, Check check, bool critical) {
  std::lock_guard lock(mu_);
  checks_.push_back(Entry{std::move(name), std::move(check), critical});
}

Health::Report Health::readiness() const {
  boost::json::object checks;
  bool all_ok = true;
  bool degraded = false;
  {
    std::lock_guard lock(mu_);
    for (const auto& e : checks_) {
      auto problem = e.check();
      if (problem && e.critical) all_ok = false;
      if (problem && !e.critical) degraded = true;
      checks[e.name] = problem ? *problem : "ok";
    }
  }
  const bool draining = draining_.load();
  boost::json::object o;
  o["status"] = draining ? "draining" : (!all_ok ? "not_ready" : degraded ? "degraded" : "ready");
  o["checks"] = std::move(checks);
  return Report{all_ok && !draining, boost::json::serialize(o)};
}

}  // namespace kiln
