// The API's handlers in process (test_api.hpp): access, bad requests, pages, rate limits,
// uploads. The job routes are in jobs_test.cpp.
#include "api/test_api.hpp"

namespace kiln::api {
namespace {

using namespace test;

TEST_F(ApiTest, EveryRouteRefusesARequestWithoutACredential) {
  std::size_t routes = 0;
  for (const auto& [method, pattern] : router_.routes()) {
    std::string path = pattern;
    for (std::size_t at; (at = path.find('{')) != std::string::npos;)
      path.replace(at, path.find('}', at) - at + 1, "x");
    for (const std::string token : {"", "not-a-token", "a.b.c"}) {
      auto a = call(method, path, token);
      EXPECT_EQ(a.status, 401) << method << " " << path << " with '" << token << "'";
      EXPECT_EQ(a.type(), "unauthorized");
      EXPECT_EQ(a.header("WWW-Authenticate"), "Bearer realm=\"kiln\"");
    }
    ++routes;
  }
  EXPECT_GE(routes, 30u);
}

TEST_F(ApiTest, AProjectSomeoneCannotSeeDoesNotExist) {
  const auto ann = token_for("ann");
  const auto bob = token_for("bob");
  project_of(ann, "p1");
  EXPECT_EQ(call("GET", "/v1/projects/p1", ann).obj().at("role"), "owner");
  for (const auto& [method, path] :
       std::vector<std::pair<std::string, std::string>>{{"GET", "/v1/projects/p1"},
                                                        {"GET", "/v1/projects/p1/members"},
                                                        {"GET", "/v1/projects/p1/scenes"},
                                                        {"GET", "/v1/projects/p1/assets"},
                                                        {"DELETE", "/v1/projects/p1"},
                                                        {"GET", "/v1/projects/nope"}}) {
    auto a = call(method, path, bob);
    EXPECT_EQ(a.status, 404) << method << " " << path;
    EXPECT_EQ(a.type(), "not-found");
  }
}

TEST_F(ApiTest, RolesComeFromMembershipNotFromTheToken) {
  const auto ann = token_for("ann");
  const auto bob = token_for("bob");  // minted before bob is a member of anything
  project_of(ann, "p1");
  ASSERT_EQ(call("PUT", "/v1/projects/p1/members/bob", ann, R"({"role":"viewer"})").status, 200);
  auto refused = call("POST", "/v1/projects/p1/scenes", bob, R"({"name":"S"})");
  EXPECT_EQ(refused.status, 403);
  EXPECT_EQ(refused.type(), "forbidden");
  ASSERT_EQ(call("PUT", "/v1/projects/p1/members/bob", ann, R"({"role":"editor"})").status, 200);
  EXPECT_EQ(call("POST", "/v1/projects/p1/scenes", bob, R"({"name":"S"})").status, 201);
  ASSERT_EQ(call("DELETE", "/v1/projects/p1/members/bob", ann).status, 204);
  EXPECT_EQ(call("GET", "/v1/projects/p1/scenes", bob).status, 404);
}

TEST_F(ApiTest, AProjectKeepsItsLastOwner) {
  const auto ann = token_for("ann");
  project_of(ann, "p1");
  auto a = call("DELETE", "/v1/projects/p1/members/ann", ann);
  EXPECT_EQ(a.status, 409);
  EXPECT_EQ(a.type(), "last-owner");
  EXPECT_EQ(call("PUT", "/v1/projects/p1/members/ann", ann, R"({"role":"viewer"})").type(),
            "last-owner");
}

TEST_F(ApiTest, ARevokedTokenIsRefusedAtOnce) {
  const auto ann = token_for("ann");
  ASSERT_EQ(call("GET", "/v1/me", ann).status, 200);
  ASSERT_EQ(call("POST", "/v1/users/ann/revoke", kServiceKey).status, 200);
  auto a = call("GET", "/v1/me", ann);
  EXPECT_EQ(a.status, 401);
  EXPECT_NE(std::string(a.obj().at("detail").as_string()).find("revoked"), std::string::npos);
  EXPECT_EQ(call("GET", "/v1/me", token_for("ann")).status, 200);  // a new one works
}

TEST_F(ApiTest, BadRequestsSayWhatIsWrong) {
  const auto ann = token_for("ann");
  project_of(ann, "p1");
  struct Case {
    std::string method, target, body, type;
  };
  for (const auto& c : std::vector<Case>{
           {"POST", "/v1/projects", "{", "invalid-json"},
           {"POST", "/v1/projects", "[]", "invalid-request"},
           {"POST", "/v1/projects", R"({"name":"P","colour":"red"})", "invalid-request"},
           {"POST", "/v1/projects", R"({"name":""})", "invalid-request"},
           // Names people read: no DEL, C1 or bidi formatting characters; 200 characters at
           // most, counted as characters (51 four-byte emoji are 204 bytes and fine).
           {"POST", "/v1/projects", "{\"name\":\"a\u007fb\"}", "invalid-request"},
           {"POST", "/v1/projects", "{\"name\":\"a\u0085b\"}", "invalid-request"},
           {"POST", "/v1/projects", "{\"name\":\"x\u202egnp.exe\"}", "invalid-request"},
           {"POST", "/v1/projects", R"({"name":")" + std::string(201, 'n') + R"("})",
            "invalid-request"},
           {"POST", "/v1/projects", R"({"name":"P","id":"a b"})", "invalid-request"},
           {"POST", "/v1/projects", R"({"name":"P","id":"p1"})", "conflict"},
           {"PUT", "/v1/projects/p1/members/bob", R"({"role":"admin"})", "invalid-request"},
           {"GET", "/v1/projects/p1/scenes?limit=0", "", "invalid-request"},
           {"GET", "/v1/projects/p1/scenes?limit=x", "", "invalid-request"},
           {"GET", "/v1/projects/p1/scenes?cursor=%%%", "", "invalid-request"},
           {"POST", "/v1/tokens", R"({"user":{"id":"x"}})", "forbidden"},
       }) {
    auto a = call(c.method, c.target, ann, c.body);
    EXPECT_EQ(a.type(), c.type) << c.method << " " << c.target << " " << c.body << ": "
                                << json::serialize(a.body);
    EXPECT_GE(a.status, 400);
  }
}

TEST_F(ApiTest, NamesAreCountedInCharacters) {
  const auto ann = token_for("ann");
  std::string fire;
  for (int i = 0; i < 51; ++i) fire += "\xF0\x9F\x94\xA5";  // U+1F525, 4 bytes each
  auto a = call("POST", "/v1/projects", ann, R"({"name":")" + fire + R"("})");
  EXPECT_EQ(a.status, 201) << json::serialize(a.body);
}

TEST_F(ApiTest, PagesWalkEveryRowOnce) {
  const auto ann = token_for("ann");
  project_of(ann, "p1");
  for (int i = 0; i < 7; ++i)
    ASSERT_EQ(call("POST", "/v1/projects/p1/scenes", ann,
                   R"({"id":"s)" + std::to_string(i) + R"(","name":"S"})")
                  .status,
              201);
  std::vector<std::string> seen;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto a = call(
        "GET", "/v1/projects/p1/scenes?limit=3" + (cursor.empty() ? "" : "&cursor=" + cursor), ann);
    ASSERT_EQ(a.status, 200);
    for (const auto& s : a.obj().at("items").as_array())
      seen.emplace_back(s.as_object().at("id").as_string());
    if (a.obj().at("next_cursor").is_null()) break;
    cursor = std::string(a.obj().at("next_cursor").as_string());
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"s0", "s1", "s2", "s3", "s4", "s5", "s6"}));
}

TEST_F(ApiTest, TooManyRequestsAreRefusedWithRetryAfter) {
  start([](ApiOptions& o) { o.user_requests_per_second = 1; });  // burst 2
  const auto ann = token_for("ann");
  EXPECT_EQ(call("GET", "/v1/me", ann).status, 200);
  EXPECT_EQ(call("GET", "/v1/me", ann).status, 200);
  auto a = call("GET", "/v1/me", ann);
  EXPECT_EQ(a.status, 429);
  EXPECT_EQ(a.type(), "rate-limited");
  EXPECT_EQ(a.header("Retry-After"), "1");
}

const std::string kSha(64, 'c');

TEST_F(ApiTest, ASmallUploadIsOneSignedPutOfExactlyItsBytes) {
  const auto ann = token_for("ann");
  project_of(ann, "p1");
  auto a = call(
      "POST", "/v1/projects/p1/uploads", ann,
      R"({"filename":"rock.png","size":10,"content_type":"image/png","sha256":")" + kSha + R"("})");
  ASSERT_EQ(a.status, 201) << json::serialize(a.body);
  const auto& put = a.obj().at("put").as_object();
  EXPECT_EQ(put.at("method"), "PUT");
  const std::string url(put.at("url").as_string());
  EXPECT_NE(url.find("/kiln/projects/p1/sha256/" + kSha), std::string::npos) << url;
  EXPECT_NE(url.find("X-Amz-Signature="), std::string::npos);
  // The checksum is signed: the store accepts these bytes only.
  EXPECT_EQ(put.at("headers").as_object().at("x-amz-checksum-sha256"),
            "zMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMw=");
  const std::string id(a.obj().at("upload").as_object().at("id").as_string());
  EXPECT_EQ(a.header("Location"), "/v1/projects/p1/uploads/" + id);
  auto got = call("GET", "/v1/projects/p1/uploads/" + id, ann);
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.obj().at("state"), "open");
  // Another member cannot see someone else's upload.
  ASSERT_EQ(call("PUT", "/v1/projects/p1/members/bob", ann, R"({"role":"editor"})").status, 200);
  EXPECT_EQ(call("GET", "/v1/projects/p1/uploads/" + id, token_for("bob")).status, 404);
}

TEST_F(ApiTest, UploadsAreRefusedWithTheirReason) {
  start([](ApiOptions& o) { o.uploads.project_quota = 100; });
  const auto ann = token_for("ann");
  project_of(ann, "p1");
  auto upload = [&](const std::string& fields) {
    return call("POST", "/v1/projects/p1/uploads", ann, "{" + fields + "}");
  };
  const auto sha = R"("sha256":")" + kSha + R"(")";
  EXPECT_EQ(upload(R"("filename":"a.png","size":10,"content_type":"image/png")").type(),
            "sha256-required");
  EXPECT_EQ(upload(R"("filename":"a.html","size":10,"content_type":"text/html",)" + sha).type(),
            "content-type-not-allowed");
  EXPECT_EQ(upload(R"("filename":"../a.png","size":10,"content_type":"image/png",)" + sha).type(),
            "invalid-request");
  EXPECT_EQ(upload(R"("filename":"a.png","size":-1,"content_type":"image/png",)" + sha).type(),
            "invalid-request");
  // Sizes as strings (Uppy's metadata) are whole numbers that fit 64 bits, nothing else.
  for (const char* size :
       {R"("99999999999999999999")", R"("-1")", R"("+1")", R"(" 1")", R"("1.0")"})
    EXPECT_EQ(upload(R"("filename":"a.png","size":)" + std::string(size) +
                     R"(,"content_type":"image/png",)" + sha)
                  .type(),
              "invalid-request")
        << size;
  // The quota counts open uploads: 60 + 60 > 100.
  EXPECT_EQ(upload(R"("filename":"a.png","size":60,"content_type":"image/png",)" + sha).status,
            201);
  auto over = upload(R"("filename":"b.png","size":60,"content_type":"image/png","sha256":")" +
                     std::string(64, 'd') + R"(")");
  EXPECT_EQ(over.status, 413);
  EXPECT_EQ(over.type(), "quota-exceeded");
  // A viewer uploads nothing.
  ASSERT_EQ(call("PUT", "/v1/projects/p1/members/vic", ann, R"({"role":"viewer"})").status, 200);
  EXPECT_EQ(call("POST", "/v1/projects/p1/uploads", token_for("vic"),
                 R"({"filename":"a.png","size":1,"content_type":"image/png",)" + sha + "}")
                .type(),
            "forbidden");
}

TEST_F(ApiTest, WithoutObjectStorageUploadsAreUnavailable) {
  start([](ApiOptions& o) { o.uploads.storage.endpoint.clear(); });
  const auto ann = token_for("ann");
  project_of(ann, "p1");
  auto a = call("POST", "/v1/projects/p1/uploads", ann,
                R"({"filename":"a.png","size":1,"content_type":"image/png"})");
  EXPECT_EQ(a.status, 503);
  EXPECT_EQ(a.type(), "unavailable");
  EXPECT_EQ(call("GET", "/v1/projects/p1/assets", ann).status, 200);  // listing needs none
}

// --- the job queue's admin routes -----------------------------------------------------

}  // namespace
}  // namespace kiln::api
