#include "auth/jwt.hpp"

#include "platform/codec.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

namespace kiln::auth {
namespace {

constexpr std::int64_t kNow = 1'800'000'000;

Claims claims() {
  Claims c;
  c.sub = "u1";
  c.name = "Ann";
  c.exp = kNow + 3600;
  c.roles = {{"p1", Role::Editor}, {"p2", Role::Viewer}};
  return c;
}

TEST(Jwt, Hs256RoundTrip) {
  auto v = Verifier::hs256("s3cret");
  auto r = v.verify(sign_hs256(claims(), "s3cret"), kNow);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.claims.sub, "u1");
  EXPECT_EQ(r.claims.name, "Ann");
  EXPECT_EQ(r.claims.roles.at("p1"), Role::Editor);
  EXPECT_EQ(r.claims.roles.at("p2"), Role::Viewer);
}

TEST(Jwt, WrongSecretAndTamperingAreRefused) {
  auto v = Verifier::hs256("s3cret");
  EXPECT_FALSE(v.verify(sign_hs256(claims(), "other"), kNow).ok);
  auto token = sign_hs256(claims(), "s3cret");
  // Swap the payload for one that makes the user an owner, keeping the signature.
  auto c = claims();
  c.roles["p1"] = Role::Owner;
  auto forged = sign_hs256(c, "s3cret");
  auto mixed = token.substr(0, token.find('.')) +
               forged.substr(forged.find('.'), forged.rfind('.') - forged.find('.')) +
               token.substr(token.rfind('.'));
  auto r = v.verify(mixed, kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token signature is invalid");
}

TEST(Jwt, ExpiryAndNotBeforeWithLeeway) {
  auto v = Verifier::hs256("k", std::chrono::seconds(30));
  auto c = claims();
  c.exp = kNow - 10;  // within leeway
  EXPECT_TRUE(v.verify(sign_hs256(c, "k"), kNow).ok);
  c.exp = kNow - 31;
  auto r = v.verify(sign_hs256(c, "k"), kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token expired");
  EXPECT_FALSE(v.verify(sign_hs256_raw(R"({"alg":"HS256"})",
                                       R"({"sub":"u","exp":1900000000,"nbf":1800001000})", "k"),
                        kNow)
                   .ok);
  EXPECT_FALSE(v.verify(sign_hs256_raw(R"({"alg":"HS256"})", R"({"sub":"u"})", "k"), kNow).ok)
      << "exp is required";
}

TEST(Jwt, AlgNoneIsRefused) {
  auto v = Verifier::hs256("k");
  std::string token = codec::base64url(R"({"alg":"none","typ":"JWT"})") + "." +
                      codec::base64url(R"({"sub":"u","exp":1900000000})") + ".";
  auto r = v.verify(token, kNow);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "token algorithm must be HS256");
  // The same with a header that lies about the algorithm but a valid HMAC.
  EXPECT_FALSE(
      v.verify(sign_hs256_raw(R"({"alg":"none"})", R"({"sub":"u","exp":1900000000})", "k"), kNow)
          .ok);
}

std::pair<std::string, EVP_PKEY*> rsa_key() {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, key);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(len));
  BIO_free(bio);
  return {pem, key};
}

std::string sign_rs256(EVP_PKEY* key, std::string_view header, std::string_view payload) {
  std::string input = codec::base64url(header) + "." + codec::base64url(payload);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestSignInit(ctx, nullptr, EVP_sha256(), nullptr, key);
  std::size_t len = 0;
  EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()),
                 input.size());
  std::string sig(len, '\0');
  EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                 reinterpret_cast<const unsigned char*>(input.data()), input.size());
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  return input + "." + codec::base64url(sig);
}

TEST(Jwt, Rs256AndAlgorithmConfusion) {
  auto [pem, key] = rsa_key();
  auto v = Verifier::rs256(pem);
  const std::string payload = R"({"sub":"u","exp":1900000000,"roles":{"p":"owner"}})";
  auto good = v.verify(sign_rs256(key, R"({"alg":"RS256"})", payload), kNow);
  ASSERT_TRUE(good.ok) << good.error;
  EXPECT_EQ(good.claims.roles.at("p"), Role::Owner);
  // HS/RS confusion: an HS256 token whose HMAC key is the public key itself.
  auto confused = v.verify(sign_hs256_raw(R"({"alg":"HS256"})", payload, pem), kNow);
  EXPECT_FALSE(confused.ok);
  EXPECT_EQ(confused.error, "token algorithm must be RS256");
  // And an RS256 token presented to an HS256 verifier.
  EXPECT_FALSE(
      Verifier::hs256(pem).verify(sign_rs256(key, R"({"alg":"RS256"})", payload), kNow).ok);
  EVP_PKEY_free(key);
  EXPECT_THROW(Verifier::rs256("not a key"), std::runtime_error);
}

TEST(Jwt, MalformedTokensAreRefused) {
  auto v = Verifier::hs256("k");
  for (const std::string& bad : std::vector<std::string>{"", "a", "a.b", "a.b.c.d", "!!!.???.###",
                                                         "e30.e30.", std::string(9000, 'a')}) {
    EXPECT_FALSE(v.verify(bad, kNow).ok) << bad.substr(0, 20);
  }
  EXPECT_FALSE(v.verify(sign_hs256_raw("[]", R"({"sub":"u","exp":1900000000})", "k"), kNow).ok);
  EXPECT_FALSE(v.verify(sign_hs256_raw(R"({"alg":"HS256"})", "not json", "k"), kNow).ok);
  EXPECT_FALSE(v.verify(sign_hs256_raw(R"({"alg":"HS256","crit":["x"]})",
                                       R"({"sub":"u","exp":1900000000})", "k"),
                        kNow)
                   .ok);
}

TEST(Jwt, BadClaimsAreRefused) {
  auto v = Verifier::hs256("k");
  auto check = [&](std::string_view payload) {
    return v.verify(sign_hs256_raw(R"({"alg":"HS256"})", payload, "k"), kNow).ok;
  };
  EXPECT_FALSE(check(R"({"exp":1900000000})"));
  EXPECT_FALSE(check(R"({"sub":"","exp":1900000000})"));
  EXPECT_FALSE(check(R"({"sub":5,"exp":1900000000})"));
  EXPECT_FALSE(check(R"({"sub":"u","exp":"soon"})"));
  EXPECT_FALSE(check(R"({"sub":"u","exp":1900000000,"roles":{"p":"god"}})"));
  EXPECT_FALSE(check(R"({"sub":"u","exp":1900000000,"roles":["p"]})"));
  EXPECT_TRUE(check(R"({"sub":"u","exp":1900000000})"));
}

// RFC 7519 section 2: a NumericDate is any JSON number of seconds, fractions included (the
// identity providers that sign RS256 tokens emit them); compared as numbers.
TEST(Jwt, NumericDatesMayHaveFractionsAndExponents) {
  auto v = Verifier::hs256("k");
  auto check = [&](const std::string& payload) {
    return v.verify(sign_hs256_raw(R"({"alg":"HS256"})", payload, "k"), kNow);
  };
  const auto now = std::to_string(kNow);
  EXPECT_TRUE(check(R"({"sub":"u","exp":)" + now + R"(.5e0})").ok);
  EXPECT_TRUE(check(R"({"sub":"u","exp":)" + std::to_string(kNow + 600) + R"(.5,"nbf":)" +
                    std::to_string(kNow - 2) + R"(.5,"iat":)" + now + R"(.25})")
                  .ok);
  auto far = check(R"({"sub":"u","exp":1e10})");
  EXPECT_TRUE(far.ok) << far.error;
  EXPECT_EQ(far.claims.exp, 10'000'000'000);
  // Past by a fraction beyond the leeway: expired; not yet valid by a fraction: refused.
  EXPECT_EQ(check(R"({"sub":"u","exp":)" + std::to_string(kNow - 31) + R"(.5})").error,
            "token expired");
  EXPECT_EQ(check(R"({"sub":"u","exp":1e10,"nbf":)" + std::to_string(kNow + 31) + R"(.5})").error,
            "token not valid yet");
  // Not dates: strings, booleans, null, negative, absurd magnitudes.
  for (const char* bad : {R"("1900000000")", "true", "null", "-1", "1e300", "2.6e11"}) {
    EXPECT_FALSE(check(std::string(R"({"sub":"u","exp":)") + bad + "}").ok) << bad;
    EXPECT_FALSE(check(std::string(R"({"sub":"u","exp":1e10,"nbf":)") + bad + "}").ok) << bad;
  }
}

}  // namespace
}  // namespace kiln::auth
