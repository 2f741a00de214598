// Wall-clock time as Kiln stores it: milliseconds since the Unix epoch (UTC). For
// durations and deadlines use std::chrono::steady_clock, never this.
#pragma once

#include <chrono>
#include <cstdint>

namespace kiln::clock {

inline std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace kiln::clock
