#include "platform/utf8.hpp"

#include <gtest/gtest.h>

namespace kiln::utf8 {

TEST(Utf8, AcceptsTextAndRefusesWhatRfc3629Forbids) {
  EXPECT_TRUE(valid("plain"));
  EXPECT_TRUE(valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));  // é € 😀
  EXPECT_FALSE(valid("\xff"));                                      // not a lead byte
  EXPECT_FALSE(valid("\xc3"));                                      // truncated
  EXPECT_FALSE(valid("\xc0\xaf"));                                  // overlong '/'
  EXPECT_FALSE(valid("\xed\xa0\x80"));                              // a surrogate
  EXPECT_FALSE(valid("\xf4\x90\x80\x80"));                          // past U+10FFFF
  std::size_t i = 0;
  EXPECT_EQ(decode("\xe2\x82\xac!", i), U'\u20ac');
  EXPECT_EQ(i, 3u);
  EXPECT_EQ(decode("\xe2\x82\xac!", i), U'!');
}

}  // namespace kiln::utf8

namespace kiln::utf8 {

TEST(Utf8, PrintableLengthCountsCharactersAndRefusesControlsAndBidi) {
  EXPECT_EQ(printable_length("rock"), 4u);
  EXPECT_EQ(printable_length("\xC3\xA9t\xC3\xA9"), 3u);  // été
  EXPECT_EQ(printable_length("\xF0\x9F\x94\xA5"), 1u);   // one emoji, four bytes
  EXPECT_EQ(printable_length(""), 0u);
  for (const char* bad :
       {"a\tb", "a\x7f", "a\xC2\x85", "x\xE2\x80\xAEgnp.exe", "\xE2\x81\xA6x", "\xD8\x9C", "\xFF"})
    EXPECT_FALSE(printable_length(bad)) << bad;
}

}  // namespace kiln::utf8
