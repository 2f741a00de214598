// Why a request was refused: the `code` of a `nack` frame.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::collab {

enum class Code {
  Ok,
  NotFound,
  Exists,
  Cycle,
  Invalid,
  Forbidden,
  TooLarge,
  RateLimited,
  Unavailable
};

std::string_view to_string(Code c);

struct Error {
  Code code = Code::Ok;
  std::string message;
  std::int64_t after_ms = 0;  // > 0: temporary; the same request may be sent again after it
  // The configured limit that refused the request (a static name, e.g. "members_per_room";
  // the `limit` label of kiln_gateway_limit_trips_total), or nullptr.
  const char* limit = nullptr;
  explicit operator bool() const { return code != Code::Ok; }
};

inline Error fail(Code c, std::string message, std::int64_t after_ms = 0) {
  return Error{c, std::move(message), after_ms};
}

// A refusal by a configured limit: counted by the gateway under `limit`.
inline Error fail_limit(const char* limit, Code c, std::string message, std::int64_t after_ms = 0) {
  return Error{c, std::move(message), after_ms, limit};
}

}  // namespace kiln::collab
