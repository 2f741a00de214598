#include "platform/utf8.hpp"

namespace kiln::utf8 {

std::optional<char32_t> decode(std::string_view s, std::size_t& i) {
  if (i >= s.size()) return std::nullopt;
  const auto b = static_cast<unsigned char>(s[i]);
  char32_t cp = 0;
  std::size_t len = 0;
  if (b < 0x80) {
    cp = b;
    len = 1;
  } else if ((b & 0xe0) == 0xc0) {
    cp = b & 0x1f;
    len = 2;
  } else if ((b & 0xf0) == 0xe0) {
    cp = b & 0x0f;
    len = 3;
  } else if ((b & 0xf8) == 0xf0) {
    cp = b & 0x07;
    len = 4;
  } else {
    return std::nullopt;
  }
  if (i + len > s.size()) return std::nullopt;
  for (std::size_t k = 1; k < len; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if ((c & 0xc0) != 0x80) return std::nullopt;
    cp = (cp << 6) | (c & 0x3f);
  }
  constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};  // shortest form
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return std::nullopt;
  i += len;
  return cp;
}

bool valid(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    if (!decode(s, i)) return false;
  }
  return true;
}

bool is_control_or_bidi(char32_t cp) {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x061c || cp == 0x200e || cp == 0x200f ||
         (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

std::optional<std::size_t> printable_length(std::string_view s) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < s.size(); ++n) {
    const auto cp = decode(s, i);
    if (!cp || is_control_or_bidi(*cp)) return std::nullopt;
  }
  return n;
}

}  // namespace kiln::utf8
