// The codecs against their standards' own test vectors: RFC 4648 section 10 (base64,
// base16), FIPS 180-4's examples for SHA-256.
#include "platform/codec.hpp"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

namespace kiln::codec {
namespace {

const std::vector<std::pair<std::string, std::string>> kRfc4648 = {{"", ""},
                                                                   {"f", "Zg=="},
                                                                   {"fo", "Zm8="},
                                                                   {"foo", "Zm9v"},
                                                                   {"foob", "Zm9vYg=="},
                                                                   {"fooba", "Zm9vYmE="},
                                                                   {"foobar", "Zm9vYmFy"}};

TEST(Codec, Base64IsRfc4648) {
  for (const auto& [raw, enc] : kRfc4648) {
    EXPECT_EQ(base64(raw), enc);
    EXPECT_EQ(base64_decode(enc), raw) << enc;
  }
}

TEST(Codec, Base64UrlIsUnpaddedWithTheUrlAlphabet) {
  EXPECT_EQ(base64url("foob"), "Zm9vYg");
  EXPECT_EQ(base64url("\xfb\xff"), "-_8");
  EXPECT_EQ(base64("\xfb\xff"), "+/8=");
  EXPECT_EQ(base64url_decode("-_8"), "\xfb\xff");
  for (const auto& [raw, enc] : kRfc4648) EXPECT_EQ(base64url_decode(base64url(raw)), raw);
}

TEST(Codec, DecodersRefuseWhatNoEncoderProduces) {
  for (const char* bad :
       {"Zg=", "Zg", "Z===", "Zm9v!", "Zm 9v", "Zm9v\n", "=Zm9", "Zh==", "Zm9vYg=A", "+/8"}) {
    EXPECT_FALSE(base64_decode(bad)) << bad;
  }
  for (const char* bad : {"Zg==", "+_8", "Z", "Zh", "-_8=", "a b"}) {
    EXPECT_FALSE(base64url_decode(bad)) << bad;
  }
}

TEST(Codec, HexIsLowercaseBase16) {
  EXPECT_EQ(hex("foobar"), "666f6f626172");  // RFC 4648 section 10, lowercased
  EXPECT_EQ(hex(std::string("\x00\xff", 2)), "00ff");
  EXPECT_EQ(hex_decode("666F6f626172"), "foobar");
  EXPECT_FALSE(hex_decode("666"));
  EXPECT_FALSE(hex_decode("6g"));
}

TEST(Codec, CaseFoldingIsAsciiOnly) {
  EXPECT_EQ(ascii_lower("Content-TYPE"), "content-type");
  EXPECT_EQ(ascii_lower("\xc3\x89"), "\xc3\x89");  // É stays
  EXPECT_TRUE(iequals("Bearer", "bEARER"));
  EXPECT_FALSE(iequals("Bearer", "Bearer "));
  EXPECT_FALSE(iequals("\xc3\x89", "\xc3\xa9"));
}

TEST(Codec, Sha256IsFips180_4) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 s;  // the same, streamed a byte at a time
  for (char c : two_blocks) s.update(std::string_view(&c, 1));
  EXPECT_EQ(s.finish_hex(), sha256_hex(two_blocks));
  EXPECT_EQ(sha256_raw("abc").size(), 32u);
}

TEST(Codec, HmacSha256IsRfc4231) {
  // RFC 4231 test cases 1 and 2.
  EXPECT_EQ(hex(hmac_sha256(std::string(20, '\x0b'), "Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(hex(hmac_sha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

}  // namespace
}  // namespace kiln::codec
