// Why a request was refused: the `code` of a `nack` frame.
#pragma once

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
  explicit operator bool() const { return code != Code::Ok; }
};

inline Error fail(Code c, std::string message) {
  return Error{c, std::move(message)};
}

}  // namespace kiln::collab
