#include "sandbox/oci/cgroup.hpp"

#include <charconv>

namespace kiln::sandbox::oci {

std::optional<std::string> oom_counter_file(std::string_view text, std::string_view root) {
  std::optional<std::string> v2;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    const auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    // hierarchy-ID:controller-list:path (cgroups(7)).
    const auto a = line.find(':');
    const auto b = a == std::string_view::npos ? a : line.find(':', a + 1);
    if (b == std::string_view::npos) continue;
    const auto controllers = line.substr(a + 1, b - a - 1);
    const auto path = line.substr(b + 1);
    if (path.empty() || path.front() != '/' || path.find("/..") != std::string_view::npos) continue;
    const auto dir = std::string(root) + (path == "/" ? "" : std::string(path));
    if (controllers.empty() && line.substr(0, a) == "0") {
      v2 = dir + "/memory.events";
      continue;
    }
    for (std::size_t at = 0; at <= controllers.size();) {
      const auto comma = controllers.find(',', at);
      const auto name =
          controllers.substr(at, comma == std::string_view::npos ? comma : comma - at);
      if (name == "memory")
        return std::string(root) + "/" + std::string(controllers) +
               (path == "/" ? "" : std::string(path)) + "/memory.oom_control";
      if (comma == std::string_view::npos) break;
      at = comma + 1;
    }
  }
  return v2;
}

std::optional<std::uint64_t> oom_kills(std::string_view text) {
  while (!text.empty()) {
    const auto nl = text.find('\n');
    const auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    constexpr std::string_view kKey = "oom_kill ";
    if (!line.starts_with(kKey)) continue;
    std::uint64_t n = 0;
    const auto digits = line.substr(kKey.size());
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc{} || end == digits.data()) return std::nullopt;
    return n;
  }
  return std::nullopt;
}

}  // namespace kiln::sandbox::oci
