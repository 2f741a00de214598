#include "platform/health.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace kiln {

void Health::add_check(std::string name, Check check) {
  std::lock_guard lock(mu_);
  checks_.emplace_back(std::move(name), std::move(check));
}

Health::Report Health::readiness() const {
  boost::json::object checks;
  bool all_ok = true;
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, check] : checks_) {
      auto problem = check();
      all_ok = all_ok && !problem;
      checks[name] = problem ? *problem : "ok";
    }
  }
  const bool draining = draining_.load();
  boost::json::object o;
  o["status"] = draining ? "draining" : (all_ok ? "ready" : "not_ready");
  o["checks"] = std::move(checks);
  return Report{all_ok && !draining, boost::json::serialize(o)};
}

}  // namespace kiln
