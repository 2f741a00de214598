// SigV4 against the S3 examples in AWS's documentation (header-signed GET with Range,

#include "platform/codec.hpp"
// presigned GET). AWS's own test suite runs in sigv4_suite_test.cpp (it needs npm).
#include "clients/s3/sigv4.hpp"

#include <gtest/gtest.h>

namespace kiln::s3 {
namespace {

// https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
// (example: GET Object, with a Range header).
const Credentials kDocs{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", {}};
const Options kS3{false, false};

TEST(SigV4S3Examples, HeaderSignedGetObjectWithRange) {
  Request r{"GET",
            "/test.txt",
            "",
            {{"Host", "examplebucket.s3.amazonaws.com"},
             {"Range", "bytes=0-9"},
             {"x-amz-content-sha256", codec::sha256_hex("")},
             {"x-amz-date", "20130524T000000Z"}},
            codec::sha256_hex("")};
  const Scope scope{"20130524", "us-east-1", "s3"};
  EXPECT_EQ(authorization(kDocs, scope, "20130524T000000Z", r, kS3),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4S3Examples, HeaderSignedPutObject) {
  const std::string body = "Welcome to Amazon S3.";
  Request r{"PUT",
            "/test$file.text",
            "",
            {{"Host", "examplebucket.s3.amazonaws.com"},
             {"Date", "Fri, 24 May 2013 00:00:00 GMT"},
             {"x-amz-date", "20130524T000000Z"},
             {"x-amz-storage-class", "REDUCED_REDUNDANCY"},
             {"x-amz-content-sha256", codec::sha256_hex(body)}},
            codec::sha256_hex(body)};
  const Scope scope{"20130524", "us-east-1", "s3"};
  EXPECT_EQ(authorization(kDocs, scope, "20130524T000000Z", r, kS3),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
            "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST(SigV4S3Examples, HeaderSignedListObjects) {
  Request r{"GET",
            "/",
            "max-keys=2&prefix=J",
            {{"Host", "examplebucket.s3.amazonaws.com"},
             {"x-amz-content-sha256", codec::sha256_hex("")},
             {"x-amz-date", "20130524T000000Z"}},
            codec::sha256_hex("")};
  const Scope scope{"20130524", "us-east-1", "s3"};
  EXPECT_EQ(authorization(kDocs, scope, "20130524T000000Z", r, kS3),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
            "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

// https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html
TEST(SigV4S3Examples, PresignedGetObject) {
  Request r{"GET", "/test.txt", "", {{"Host", "examplebucket.s3.amazonaws.com"}}, {}};
  const Scope scope{"20130524", "us-east-1", "s3"};
  const auto q = presign_query(kDocs, scope, "20130524T000000Z", 86400, r, kS3);
  EXPECT_EQ(
      q,
      "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-"
      "east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-"
      "SignedHeaders=host&X-Amz-Signature="
      "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
}

TEST(SigV4, S3PathsAreEncodedOnceAndNotNormalised) {
  EXPECT_EQ(canonical_uri("/a b/../c%2Fd//e", kS3), "/a%20b/../c%2Fd//e");
  EXPECT_EQ(canonical_uri("/a b/../c", Options{}), "/c");
  EXPECT_EQ(canonical_uri("/caf%C3%A9", kS3), "/caf%C3%A9");
  EXPECT_EQ(canonical_uri("/caf%C3%A9", Options{}), "/caf%25C3%25A9");
  EXPECT_EQ(canonical_query("b=2&a=%7e&a=1&c"), "a=1&a=~&b=2&c=");
  EXPECT_EQ(uri_encode("a/b c+", true), "a/b%20c%2B");
  EXPECT_EQ(percent_decode("%41%zz%4"), "A%zz%4");
  EXPECT_EQ(amz_date(1369353600), "20130524T000000Z");
}

}  // namespace
}  // namespace kiln::s3
