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

namespace kiln::http {
namespace {

TEST(RouterPatterns, NamedSegmentsMatchOneDecodedSegment) {
  Router r;
  r.add("GET", "/v1/projects/{project}/members/{user}", "member",
        [](const Request&) { return Response::json(200, "{}"); });
  r.add_async("DELETE", "/v1/projects/{project}", "project_delete", [](Request, Responder) {});
  auto m = r.match("GET", "/v1/projects/p1/members/a%20b");
  ASSERT_NE(m.handler, nullptr);
  EXPECT_EQ(m.route, "member");
  ASSERT_EQ(m.params.size(), 2u);
  EXPECT_EQ(m.params[0], (std::pair<std::string, std::string>{"project", "p1"}));
  EXPECT_EQ(m.params[1], (std::pair<std::string, std::string>{"user", "a b"}));
  EXPECT_EQ(r.match("GET", "/v1/projects//members/u").handler, nullptr);  // empty segment
  EXPECT_EQ(r.match("GET", "/v1/projects/p/members/u/x").handler, nullptr);
  EXPECT_EQ(r.match("GET", "/v1/projects/p/members/%zz").handler, nullptr);  // bad escape
  EXPECT_EQ(r.match("GET", "/v1/projects/p/members/%4").handler, nullptr);
  auto d = r.match("DELETE", "/v1/projects/p9");
  EXPECT_NE(d.async_handler, nullptr);
  EXPECT_EQ(d.params.at(0).second, "p9");
  auto wrong = r.match("PUT", "/v1/projects/p9");
  EXPECT_TRUE(wrong.method_not_allowed);
  EXPECT_EQ(wrong.allow, "DELETE");
  EXPECT_EQ(r.routes().size(), 2u);
}

TEST(RouterPatterns, QueryParametersAreDecoded) {
  Request q;
  q.query = "limit=5&cursor=a%2Bb&name=x+y&flag";
  EXPECT_EQ(q.query_param("limit"), "5");
  EXPECT_EQ(q.query_param("cursor"), "a+b");
  EXPECT_EQ(q.query_param("name"), "x y");
  EXPECT_EQ(q.query_param("flag"), "");
  EXPECT_FALSE(q.query_param("missing"));
}

}  // namespace
}  // namespace kiln::http

namespace kiln::http {
namespace {

std::string header_of(const Response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers)
    if (k == name) return v;
  return "";
}

TEST(Cors, PreflightsFromAllowedOriginsAreAnsweredOthersRefused) {
  const std::vector<std::string> allowed{"https://editor.example"};
  Request pre;
  pre.method = "OPTIONS";
  pre.headers = {{"Origin", "https://editor.example"},
                 {"Access-Control-Request-Method", "POST"},
                 {"Access-Control-Request-Headers", "authorization, content-type"}};
  auto ok = cors_preflight(pre, allowed);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 204);
  EXPECT_EQ(header_of(*ok, "Access-Control-Allow-Origin"), "https://editor.example");
  EXPECT_EQ(header_of(*ok, "Access-Control-Allow-Headers"), "authorization, content-type");
  auto evil = pre;
  evil.headers[0].second = "https://evil.example";
  auto refused = cors_preflight(evil, allowed);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 403);
  EXPECT_EQ(header_of(*refused, "Access-Control-Allow-Origin"), "");
  EXPECT_EQ(cors_preflight(pre, {})->status, 403);  // no CORS configured: no browser access
  Request get;
  get.method = "GET";
  get.headers = {{"Origin", "https://editor.example"}};
  EXPECT_FALSE(cors_preflight(get, allowed));  // not a preflight: routed as usual
}

TEST(Cors, ResponsesToAllowedOriginsCarryTheHeaders) {
  Request req;
  req.method = "GET";
  req.headers = {{"Origin", "https://editor.example"}};
  Response r{200, "application/json", "{}", {}};
  add_cors(req, r, {"*"});
  EXPECT_EQ(header_of(r, "Access-Control-Allow-Origin"), "https://editor.example");
  EXPECT_NE(header_of(r, "Access-Control-Expose-Headers").find("Kiln-After"), std::string::npos);
  Response none{200, "application/json", "{}", {}};
  add_cors(req, none, {"https://other.example"});
  EXPECT_TRUE(none.headers.empty());
  Request no_origin;
  add_cors(no_origin, none, {"*"});
  EXPECT_TRUE(none.headers.empty());
}

// One '*' matches any run of characters, as S3's AllowedOrigin; the API, the store's
// objects.cors_origins and a bucket's CORS rules all match with it.
TEST(Cors, OriginPatternsTakeOneWildcard) {
  EXPECT_TRUE(wildcard_match("https://*.example.com", "https://editor.example.com"));
  EXPECT_TRUE(wildcard_match("https://*.example.com", "https://a.b.example.com"));
  EXPECT_FALSE(wildcard_match("https://*.example.com", "https://example.com"));
  EXPECT_FALSE(wildcard_match("https://*.example.com", "https://evil.com/.example.com.x"));
  EXPECT_FALSE(wildcard_match("https://*.example.com", "http://editor.example.com"));
  EXPECT_TRUE(wildcard_match("*", "null"));
  EXPECT_FALSE(wildcard_match("https://Editor.example", "https://editor.example"));
  EXPECT_TRUE(wildcard_match("X-Amz-*", "x-amz-date", true));
  EXPECT_FALSE(wildcard_match("ab*ba", "aba"));  // head and tail may not overlap
  EXPECT_FALSE(origin_allowed(std::string_view(""), {"*"}));
  for (const char* sly : {"https://evil.test/.example.com", "https://evil.test?.example.com",
                          "https://user@evil.example.com"})
    EXPECT_FALSE(origin_allowed(std::string_view(sly), {"https://*.example.com"})) << sly;
  EXPECT_TRUE(origin_allowed(std::string_view("http://localhost:5173"), {"http://localhost:*"}));
  EXPECT_FALSE(origin_allowed(std::nullopt, {"*"}));
  EXPECT_EQ(bad_wildcard_pattern({"https://*.a", "*://*.b"}), "*://*.b");
  EXPECT_EQ(bad_wildcard_pattern({"*", "https://*.a"}), std::nullopt);

  Request pre;
  pre.method = "OPTIONS";
  pre.headers = {{"Origin", "https://editor.studio.example"},
                 {"Access-Control-Request-Method", "PUT"}};
  EXPECT_EQ(cors_preflight(pre, {"https://*.studio.example"})->status, 204);
  EXPECT_EQ(cors_preflight(pre, {"https://*.other.example"})->status, 403);
}

}  // namespace
}  // namespace kiln::http
