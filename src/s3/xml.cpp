#include "s3/xml.hpp"

namespace kiln::s3::xml {

std::string escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string unescape(std::string_view s) {
  static const std::pair<std::string_view, char> kEntities[] = {
      {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    bool done = false;
    if (s[i] == '&') {
      for (const auto& [e, c] : kEntities) {
        if (s.substr(i, e.size()) == e) {
          out.push_back(c);
          i += e.size() - 1;
          done = true;
          break;
        }
      }
    }
    if (!done) out.push_back(s[i]);
  }
  return out;
}

std::vector<std::string> elements(std::string_view s, std::string_view tag) {
  std::vector<std::string> out;
  const std::string open = "<" + std::string(tag) + ">", close = "</" + std::string(tag) + ">";
  std::size_t pos = 0;
  while ((pos = s.find(open, pos)) != std::string_view::npos) {
    const auto start = pos + open.size();
    const auto end = s.find(close, start);
    if (end == std::string_view::npos) break;
    out.emplace_back(s.substr(start, end - start));
    pos = end + close.size();
  }
  return out;
}

std::string first(std::string_view s, std::string_view tag) {
  auto all = elements(s, tag);
  return all.empty() ? std::string() : unescape(all.front());
}

}  // namespace kiln::s3::xml
