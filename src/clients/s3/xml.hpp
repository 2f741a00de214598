// The little XML S3 speaks: element text by tag, and escaping. S3 documents are flat and
// machine-made; this reads what Kiln's client and store exchange, not arbitrary XML.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiln::s3::xml {

std::string escape(std::string_view s);
std::string unescape(std::string_view s);
// The raw inner text of every <tag>...</tag> in `s`, in order (nested tags included).
std::vector<std::string> elements(std::string_view s, std::string_view tag);
// The unescaped text of the first <tag>, or "".
std::string first(std::string_view s, std::string_view tag);

}  // namespace kiln::s3::xml
