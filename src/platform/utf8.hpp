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

// C0 and C1 controls, DEL, and the bidirectional formatting characters (Unicode UAX #9:
// ALM, LRM, RLM, LRE..RLO, LRI..PDI), which can make a name read as another ("x\u202Egnp.exe"
// shows as "xexe.png").
bool is_control_or_bidi(char32_t cp);
// The number of code points in `s` when it is UTF-8 without a control or bidi formatting
// character (a name a person reads); nullopt otherwise.
std::optional<std::size_t> printable_length(std::string_view s);

}  // namespace kiln::utf8
