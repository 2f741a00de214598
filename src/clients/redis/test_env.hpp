// Where the integration tests' Redis servers are: KILN_TEST_REDIS="<standalone> <cluster
// seed>", both host:port, set by CTest for tests that require the `redis` fixture.
#pragma once

#include "clients/redis/cluster.hpp"

#include <cstdlib>
#include <optional>
#include <string>

namespace kiln::redis {

// which: 0 for the standalone server, 1 for the cluster seed; nullopt when not set.
inline std::optional<Endpoint> test_endpoint(int which) {
  const char* v = std::getenv("KILN_TEST_REDIS");
  std::string s = v ? v : "";
  auto space = s.find(' ');
  s = which == 0 ? s.substr(0, space) : (space == std::string::npos ? "" : s.substr(space + 1));
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  return Endpoint{s.substr(0, colon), static_cast<std::uint16_t>(std::stoi(s.substr(colon + 1)))};
}

}  // namespace kiln::redis
