// The verifier against requests signed by the signer (itself pinned by AWS's suite), and

#include "platform/codec.hpp"
// every way a request can be wrong: tampered, expired, skewed, another key, another scope.
#include "clients/s3/verify.hpp"

#include <gtest/gtest.h>

namespace kiln::s3 {
namespace {

const Credentials kCreds{"AKIDKILN", "secret-0123456789abcdef", {}};
const std::int64_t kNow = 1795600000;  // a fixed "now": no clock in these tests
const Options kS3{false, false};

std::optional<std::string> lookup(const std::string& key) {
  if (key == kCreds.access_key) return kCreds.secret_key;
  return std::nullopt;
}

Request signed_put(std::int64_t at, const std::string& path = "/media/a.txt") {
  Request r{"PUT",
            path,
            "",
            {{"Host", "127.0.0.1:7701"},
             {"x-amz-content-sha256", codec::sha256_hex("hi")},
             {"x-amz-date", amz_date(at)}},
            codec::sha256_hex("hi")};
  const Scope scope{amz_date(at).substr(0, 8), "us-east-1", "s3"};
  r.headers.emplace_back("Authorization", authorization(kCreds, scope, amz_date(at), r, kS3));
  return r;
}

std::string code_of(const std::variant<Verified, Refused>& v) {
  return std::holds_alternative<Refused>(v) ? std::get<Refused>(v).code : "ok";
}

TEST(Verify, HeaderSignedRequests) {
  auto ok = verify(signed_put(kNow), kNow, lookup, {});
  ASSERT_EQ(code_of(ok), "ok");
  EXPECT_EQ(std::get<Verified>(ok).access_key, "AKIDKILN");
  EXPECT_EQ(std::get<Verified>(ok).payload_hash, codec::sha256_hex("hi"));
  EXPECT_FALSE(std::get<Verified>(ok).presigned);

  auto tampered = signed_put(kNow);
  tampered.path = "/media/b.txt";
  EXPECT_EQ(code_of(verify(tampered, kNow, lookup, {})), "SignatureDoesNotMatch");
  auto body_swapped = signed_put(kNow);
  body_swapped.headers[1].second = codec::sha256_hex("other");
  EXPECT_EQ(code_of(verify(body_swapped, kNow, lookup, {})), "SignatureDoesNotMatch");
  EXPECT_EQ(code_of(verify(signed_put(kNow - 16 * 60), kNow, lookup, {})), "RequestTimeTooSkewed");
  EXPECT_EQ(code_of(verify(signed_put(kNow + 16 * 60), kNow, lookup, {})), "RequestTimeTooSkewed");
  EXPECT_EQ(code_of(verify(signed_put(kNow - 14 * 60), kNow, lookup, {})), "ok");
  VerifyOptions other_region;
  other_region.region = "eu-west-1";
  EXPECT_EQ(code_of(verify(signed_put(kNow), kNow, lookup, other_region)),
            "AuthorizationHeaderMalformed");
  auto unknown = [](const std::string&) -> std::optional<std::string> { return std::nullopt; };
  EXPECT_EQ(code_of(verify(signed_put(kNow), kNow, unknown, {})), "InvalidAccessKeyId");
  auto wrong_secret = [](const std::string&) -> std::optional<std::string> { return "not-it"; };
  EXPECT_EQ(code_of(verify(signed_put(kNow), kNow, wrong_secret, {})), "SignatureDoesNotMatch");
  auto no_hash = signed_put(kNow);
  no_hash.headers.erase(no_hash.headers.begin() + 1);
  EXPECT_EQ(code_of(verify(no_hash, kNow, lookup, {})), "InvalidRequest");
  auto garbage = signed_put(kNow);
  garbage.headers.back().second = "AWS4-HMAC-SHA256 nonsense";
  EXPECT_EQ(code_of(verify(garbage, kNow, lookup, {})), "AuthorizationHeaderMalformed");
  auto v2 = signed_put(kNow);
  v2.headers.back().second = "AWS AKIDKILN:c2lnbmF0dXJl";
  EXPECT_EQ(code_of(verify(v2, kNow, lookup, {})), "AuthorizationHeaderMalformed");
}

Request presigned_get(std::int64_t at, std::int64_t expires,
                      const std::string& path = "/media/a.txt") {
  Request r{"GET", path, "", {{"Host", "127.0.0.1:7701"}}, {}};
  const Scope scope{amz_date(at).substr(0, 8), "us-east-1", "s3"};
  r.query = presign_query(kCreds, scope, amz_date(at), expires, r, kS3);
  return r;
}

TEST(Verify, PresignedUrls) {
  auto ok = verify(presigned_get(kNow - 100, 300), kNow, lookup, {});
  ASSERT_EQ(code_of(ok), "ok");
  EXPECT_TRUE(std::get<Verified>(ok).presigned);
  EXPECT_EQ(std::get<Verified>(ok).payload_hash, "UNSIGNED-PAYLOAD");
  // Expired: AccessDenied, as S3.
  auto expired = verify(presigned_get(kNow - 301, 300), kNow, lookup, {});
  EXPECT_EQ(code_of(expired), "AccessDenied");
  EXPECT_EQ(std::get<Refused>(expired).message, "Request has expired.");
  // Replayed for another key, or with another method.
  auto other_key = presigned_get(kNow, 300);
  other_key.path = "/media/secret.txt";
  EXPECT_EQ(code_of(verify(other_key, kNow, lookup, {})), "SignatureDoesNotMatch");
  auto other_method = presigned_get(kNow, 300);
  other_method.method = "DELETE";
  EXPECT_EQ(code_of(verify(other_method, kNow, lookup, {})), "SignatureDoesNotMatch");
  // Tampered expiry (longer life) breaks the signature.
  auto longer = presigned_get(kNow, 300);
  longer.query.replace(longer.query.find("X-Amz-Expires=300"), 17, "X-Amz-Expires=900");
  EXPECT_EQ(code_of(verify(longer, kNow, lookup, {})), "SignatureDoesNotMatch");
  EXPECT_EQ(code_of(verify(presigned_get(kNow, 604801), kNow, lookup, {})),
            "AuthorizationQueryParametersError");
  // A lifetime of zero or less was over when signed: expired (403), as S3 answers it.
  auto negative = verify(presigned_get(kNow, -1000), kNow, lookup, {});
  EXPECT_EQ(code_of(negative), "AccessDenied");
  EXPECT_EQ(std::get<Refused>(negative).status, 403);
  EXPECT_EQ(code_of(verify(presigned_get(kNow + 3600, 7200), kNow, lookup, {})),
            "RequestTimeTooSkewed");
  Request unsigned_get{"GET", "/media/a.txt", "", {{"Host", "h"}}, {}};
  EXPECT_EQ(code_of(verify(unsigned_get, kNow, lookup, {})), "AccessDenied");
  auto partial = presigned_get(kNow, 300);
  partial.query = partial.query.substr(0, partial.query.find("&X-Amz-Signature"));
  EXPECT_EQ(code_of(verify(partial, kNow, lookup, {})), "AuthorizationQueryParametersError");
}

TEST(Verify, PresignedUrlsSignExtraHeaders) {
  // A presigned PUT that signs x-amz-checksum-sha256 (as the upload API does): the request
  // must carry the header with exactly that value.
  const std::string checksum = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
  Request r{"PUT",
            "/media/a.txt",
            "",
            {{"Host", "127.0.0.1:7701"}, {"x-amz-checksum-sha256", checksum}},
            {}};
  const Scope scope{amz_date(kNow).substr(0, 8), "us-east-1", "s3"};
  r.query = presign_query(kCreds, scope, amz_date(kNow), 300, r, kS3);
  EXPECT_NE(r.query.find("X-Amz-SignedHeaders=host%3Bx-amz-checksum-sha256"), std::string::npos)
      << r.query;
  EXPECT_EQ(code_of(verify(r, kNow, lookup, {})), "ok");
  auto other = r;
  other.headers[1].second = "AAAAul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
  EXPECT_EQ(code_of(verify(other, kNow, lookup, {})), "SignatureDoesNotMatch");
  auto without = r;
  without.headers.pop_back();
  EXPECT_EQ(code_of(verify(without, kNow, lookup, {})), "SignatureDoesNotMatch");
  // An x-amz-* header the URL did not sign is refused, as S3 does (HeadersNotSigned).
  for (const char* extra : {"x-amz-meta-evil", "X-Amz-Acl", "x-amz-server-side-encryption"}) {
    auto more = r;
    more.headers.emplace_back(extra, "1");
    EXPECT_EQ(code_of(verify(more, kNow, lookup, {})), "AccessDenied") << extra;
  }
}

}  // namespace
}  // namespace kiln::s3
