#include "clients/s3/xml.hpp"

#include <gtest/gtest.h>

namespace kiln::s3::xml {

TEST(S3Xml, EscapesWhatAParserWouldChangeAndReadsItBack) {
  const std::string key = "a&b<c>\"d'\r\n\te";
  const auto escaped = escape(key);
  EXPECT_EQ(escaped, "a&amp;b&lt;c&gt;&quot;d&apos;&#13;&#10;\te");  // CR, LF as S3 sends them
  EXPECT_EQ(unescape(escaped), key);
}

TEST(S3Xml, CharacterReferencesDecodeToUtf8) {
  EXPECT_EQ(unescape("nl&#x0A;key"), "nl\nkey");
  EXPECT_EQ(unescape("&#8364;&#x1F600;"), "\xe2\x82\xac\xf0\x9f\x98\x80");
  // Not references (or not characters): left as they are.
  EXPECT_EQ(unescape("&#xD800; &#; &#xZZ; &bogus;"), "&#xD800; &#; &#xZZ; &bogus;");
}

}  // namespace kiln::s3::xml
