#include "platform/http_framing.hpp"

#include "platform/codec.hpp"
#include "platform/http.hpp"

#include <algorithm>
#include <cctype>

namespace kiln::http {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The comma-separated elements of a list-valued field (empty elements dropped).
std::vector<std::string_view> elements(std::string_view v) {
  std::vector<std::string_view> out;
  while (true) {
    const auto comma = v.find(',');
    const auto e = trim(v.substr(0, comma));
    if (!e.empty()) out.push_back(e);
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace

std::optional<FramingError> framing_error(
    const std::vector<std::pair<std::string_view, std::string_view>>& headers) {
  std::vector<std::string_view> codings;
  std::vector<std::string_view> lengths;
  bool has_te = false;
  for (const auto& [name, value] : headers) {
    if (codec::iequals(name, "transfer-encoding")) {
      has_te = true;
      for (auto e : elements(value)) codings.push_back(e);
    } else if (codec::iequals(name, "content-length")) {
      for (auto e : elements(value)) lengths.push_back(e);
      if (elements(value).empty()) lengths.emplace_back("");
    }
  }
  if (has_te) {
    if (!lengths.empty()) return FramingError{400, "both Transfer-Encoding and Content-Length"};
    if (codings.empty() || !codec::iequals(codings.back(), "chunked"))
      return FramingError{400, "a Transfer-Encoding whose final coding is not chunked"};
    for (std::size_t i = 0; i + 1 < codings.size(); ++i)
      return FramingError{501, "the transfer coding '" + std::string(codings[i]) +
                                   "' is not implemented (only chunked)"};
    return std::nullopt;
  }
  for (auto l : lengths) {
    if (l.empty() || l.size() > 19 ||
        !std::all_of(l.begin(), l.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return FramingError{400, "a Content-Length that is not a decimal number"};
    if (l != lengths.front()) return FramingError{400, "conflicting Content-Length values"};
  }
  return std::nullopt;
}

}  // namespace kiln::http
