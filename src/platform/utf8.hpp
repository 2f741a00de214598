// UTF-8 as RFC 3629 defines it: shortest forms only, no surrogates (U+D800-U+DFFF), nothing
// past U+10FFFF. For names users give (file names, object keys) that must be text.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

namespace kiln::utf8 {

// The code point starting at s[i], advancing i past it; nullopt (i unchanged) when the bytes
// there are not UTF-8.
std::optional<char32_t> decode(std::string_view s, std::size_t& i);
// Whether all of `s` is UTF-8.
bool valid(std::string_view s);

}  // namespace kiln::utf8
