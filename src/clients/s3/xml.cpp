#include "clients/s3/xml.hpp"

#include <cstdint>

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
      case '\r':  // a parser would read a raw CR as LF (XML 1.0 section 2.11): S3 sends these
        out += "&#13;";
        break;
      case '\n':
        out += "&#10;";
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
      // Character references (&#13; &#x0A;), written back as UTF-8.
      const auto semi = s.find(';', i);
      if (!done && i + 2 < s.size() && s[i + 1] == '#' && semi != std::string_view::npos &&
          semi - i <= 10) {
        const bool hex = s[i + 2] == 'x';
        const auto digits = s.substr(i + (hex ? 3 : 2), semi - i - (hex ? 3 : 2));
        std::uint32_t cp = 0;
        bool ok = !digits.empty();
        for (char d : digits) {
          const int v = d >= '0' && d <= '9'          ? d - '0'
                        : hex && d >= 'a' && d <= 'f' ? d - 'a' + 10
                        : hex && d >= 'A' && d <= 'F' ? d - 'A' + 10
                                                      : -1;
          if (v < 0) ok = false;
          cp = cp * (hex ? 16 : 10) + static_cast<std::uint32_t>(v < 0 ? 0 : v);
        }
        if (ok && cp > 0 && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff)) {
          if (cp < 0x80) {
            out.push_back(static_cast<char>(cp));
          } else if (cp < 0x800) {
            out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          } else if (cp < 0x10000) {
            out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          } else {
            out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
            out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
            out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
          }
          i = semi;
          done = true;
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
