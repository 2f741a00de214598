#include "platform/http.hpp"

#include <gtest/gtest.h>

namespace kiln::http {
namespace {

Handler returning(int status) {
  return [status](const Request&) { return Response::json(status, "{}"); };
}

TEST(Router, MatchesExactPathAndMethod) {
  Router r;
  r.add("GET", "/healthz", "healthz", returning(200));
  r.add("POST", "/things", "things_create", returning(201));
  auto m = r.match("GET", "/healthz");
  ASSERT_NE(m.handler, nullptr);
  EXPECT_EQ(m.route, "healthz");
  EXPECT_EQ((*m.handler)(Request{}).status, 200);
  EXPECT_EQ(r.match("GET", "/healthz/").handler, nullptr);
  EXPECT_EQ(r.match("GET", "/nothing").route, "unmatched");
}

TEST(Router, HeadIsServedByGet) {
  Router r;
  r.add("GET", "/x", "x", returning(200));
  EXPECT_NE(r.match("HEAD", "/x").handler, nullptr);
}

TEST(Router, WrongMethodIs405WithAllow) {
  Router r;
  r.add("GET", "/x", "x", returning(200));
  r.add("PUT", "/x", "x_put", returning(200));
  auto m = r.match("DELETE", "/x");
  EXPECT_EQ(m.handler, nullptr);
  EXPECT_TRUE(m.method_not_allowed);
  EXPECT_EQ(m.allow, "GET, PUT");
}

TEST(Request, HeadersAreCaseInsensitive) {
  Request req;
  req.headers = {{"X-Request-Id", "abc"}};
  EXPECT_EQ(req.header("x-request-id").value(), "abc");
  EXPECT_FALSE(req.header("authorization").has_value());
}

TEST(Response, ProblemIsRfc9457Json) {
  auto r = Response::problem(404, "https://kiln.dev/problems/not-found", "Not Found", "nope \"x\"");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.content_type, "application/problem+json");
  EXPECT_EQ(
      r.body,
      R"({"type":"https://kiln.dev/problems/not-found","title":"Not Found","status":404,"detail":"nope \"x\""})");
}

TEST(RequestId, ClientIdsAreKeptOnlyWhenPlain) {
  EXPECT_EQ(accept_or_make_request_id("abc-123_x.y"), "abc-123_x.y");
  auto made = accept_or_make_request_id(std::nullopt);
  EXPECT_EQ(made.size(), 16u);
  EXPECT_NE(accept_or_make_request_id("evil\"}\n{"), "evil\"}\n{");
  EXPECT_NE(accept_or_make_request_id(std::string(65, 'a')), std::string(65, 'a'));
  EXPECT_NE(accept_or_make_request_id(""), "");
}

}  // namespace
}  // namespace kiln::http
