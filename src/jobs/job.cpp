#include "jobs/job.hpp"

#include <algorithm>
#include <cmath>

namespace kiln::jobs {

bool valid_type(std::string_view type) {
  if (type.empty() || type.size() > kMaxTypeBytes || type[0] < 'a' || type[0] > 'z') return false;
  return std::all_of(type.begin(), type.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
  });
}

std::chrono::milliseconds backoff(const RetryPolicy& p, int attempt, double unit) {
  const double base = static_cast<double>(std::max<std::int64_t>(p.base.count(), 0));
  const double cap = static_cast<double>(std::max<std::int64_t>(p.cap.count(), 0));
  // 2^(attempt-1), bounded so that the product cannot overflow before the cap applies.
  const double ceiling = std::min(cap, base * std::ldexp(1.0, std::clamp(attempt - 1, 0, 62)));
  const double u = std::clamp(unit, 0.0, 1.0);
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::floor(ceiling * u)));
}

AfterFailure after_failure(const RetryPolicy& p, int attempt, Failure f, double unit) {
  if (f == Failure::permanent || attempt >= p.max_attempts) return {State::dead, {}};
  return {State::queued, backoff(p, attempt, unit)};
}

std::string clip(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  std::size_t n = max;
  // Back off continuation bytes (10xxxxxx) so that no sequence is cut in half.
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

}  // namespace kiln::jobs
