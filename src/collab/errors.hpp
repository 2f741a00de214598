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
  explicit operator bool() const { return code != Code::Ok; }
};

inline Error fail(Code c, std::string message, std::int64_t after_ms = 0) {
  return Error{c, std::move(message), after_ms};
}

}  // namespace kiln::collab
