// Whether a request's header section frames its body unambiguously (RFC 9112 section 6):
// the check every listener makes before it reads a body, so that no two parsers (a proxy in
// front, Kiln behind) can disagree on where a request ends (request smuggling).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::http {

struct FramingError {
  int status;          // 400 (ambiguous or malformed), 501 (a transfer coding not implemented)
  std::string reason;  // for the problem's detail and the log
};

// `headers`: (name, value) as received. Refused: a Transfer-Encoding whose final coding is
// not chunked (400), any coding besides chunked (501), Transfer-Encoding together with
// Content-Length (400), a Content-Length that is not one decimal number or that differs
// between its fields (400).
std::optional<FramingError> framing_error(
    const std::vector<std::pair<std::string_view, std::string_view>>& headers);

}  // namespace kiln::http
