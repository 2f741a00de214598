#include "jobs/job.hpp"

#include <charconv>

#include <algorithm>
#include <cmath>

namespace kiln::jobs {

Result<std::map<std::string, int, std::less<>>> parse_type_limits(std::string_view text, int max) {
  const auto trim = [](std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
  };
  std::map<std::string, int, std::less<>> out;
  if (trim(text).empty()) return out;
  for (std::size_t from = 0; from <= text.size();) {
    const auto comma = std::min(text.find(',', from), text.size());
    const auto item = trim(text.substr(from, comma - from));
    from = comma + 1;
    const auto bad = [&](const std::string& why) {
      return Error{Errc::invalid, "'" + std::string(item) + "': " + why};
    };
    if (item.empty()) return bad("an empty item (items are type=n, separated by commas)");
    const auto eq = item.find('=');
    if (eq == std::string_view::npos) return bad("not type=n");
    const auto type = trim(item.substr(0, eq));
    const auto count = trim(item.substr(eq + 1));
    if (!valid_type(type)) return bad("a job type is 1-64 of [a-z0-9._-], starting with a letter");
    int n = 0;
    const auto* end = count.data() + count.size();
    const auto [at, ec] = std::from_chars(count.data(), end, n);
    if (count.empty() || ec != std::errc{} || at != end || n < 1 || n > max)
      return bad("n must be a whole number from 1 to " + std::to_string(max) +
                 " (jobs.concurrency)");
    if (!out.emplace(std::string(type), n).second) return bad("the type is named twice");
  }
  return out;
}

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
