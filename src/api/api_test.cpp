// The API's handlers in process: a request in, a response out, no socket. The database is a
// real SQLite file; object storage is configured but never reached (single-PUT uploads are
// planned and signed without a storage call). What needs the wire (HTTP framing, the
// gateway, S3) is tested end to end in tests/e2e.
#include "api/api.hpp"

#include "auth/jwt.hpp"
#include "jobs/database_queue.hpp"
#include "platform/metrics.hpp"
#include "platform/thread_pool.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <unistd.h>
#include <filesystem>
#include <future>

namespace kiln::api {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

constexpr const char* kSecret = "a-test-secret-of-at-least-32-bytes!!";
constexpr const char* kServiceKey = "service-key-for-tests";

struct Answer {
  int status = 0;
  json::value body;
  std::vector<std::pair<std::string, std::string>> headers;

  [[nodiscard]] std::string type() const {
    const auto* o = body.if_object();
    const auto* t = o ? o->if_contains("type") : nullptr;
    return t && t->is_string() ? std::string(t->get_string()).substr(26) : "";
  }
  [[nodiscard]] std::string header(std::string_view name) const {
    for (const auto& [k, v] : headers)
      if (k == name) return v;
    return "";
  }
  [[nodiscard]] const json::object& obj() const { return body.as_object(); }
};

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }

  void start(std::function<void(ApiOptions&)> change) {
    api_.reset();
    static int n = 0;
    const auto dir = fs::temp_directory_path() / ("kiln-api-test-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    store::DatabaseOptions o;
    o.url = "sqlite:" + (dir / ("t" + std::to_string(++n) + ".db")).string();
    db_ = std::make_unique<store::Database>(o);
    db_->migrate();
    ApiOptions opts;
    opts.service_key = kServiceKey;
    opts.jwt_secret = kSecret;
    opts.user_requests_per_second = 1000;
    opts.uploads.storage.endpoint = "http://127.0.0.1:9";  // discard: never called here
    opts.uploads.storage.credentials = {"AKIDTEST", "secret", ""};
    opts.uploads.policy.content_types = {"model/*", "image/*"};
    opts.uploads.policy.multipart_threshold = 1000;
    if (change) change(opts);
    router_ = http::Router{};
    registry_ = std::make_unique<metrics::Registry>();
    jobs::DatabaseQueueOptions qo;
    qo.default_policy.max_attempts = 2;
    qo.random = [] { return 0.0; };  // no backoff: a retried job is ready at once
    queue_ = std::make_unique<jobs::DatabaseQueue>(*db_, qo);
    api_ = std::make_unique<Api>(*db_, verifier_, pool_, opts, *registry_, nullptr, nullptr,
                                 with_queue_ ? queue_.get() : nullptr);
    api_->install(router_);
  }

  Answer call(const std::string& method, const std::string& target, const std::string& token,
              const std::string& body = "") {
    http::Request req;
    req.method = method;
    req.target = target;
    const auto q = target.find('?');
    req.path = target.substr(0, q);
    if (q != std::string::npos) req.query = target.substr(q + 1);
    req.request_id = "test";
    if (!token.empty()) req.headers.emplace_back("Authorization", "Bearer " + token);
    if (!body.empty()) req.headers.emplace_back("Content-Type", "application/json");
    auto m = router_.match(method, req.path);
    EXPECT_NE(m.async_handler, nullptr) << method << " " << req.path << " has no route";
    if (m.async_handler == nullptr) return {};
    req.params = m.params;
    std::optional<http::Response> resp;
    if (!body.empty()) resp = router_.header_check()(req);  // as the server does
    if (!resp) {
      req.body = body;
      std::promise<http::Response> done;
      (*m.async_handler)(req, [&](http::Response r) { done.set_value(std::move(r)); });
      resp = done.get_future().get();
    }
    Answer a{resp->status, nullptr, resp->headers};
    if (!resp->body.empty()) a.body = json::parse(resp->body);
    return a;
  }

  std::string token_for(const std::string& user) {
    auto a =
        call("POST", "/v1/tokens", kServiceKey, R"({"user":{"id":")" + user + R"(","name":"N"}})");
    EXPECT_EQ(a.status, 201) << json::serialize(a.body);
    return std::string(a.obj().at("token").as_string());
  }

  std::string project_of(const std::string& token, const std::string& id) {
    auto a = call("POST", "/v1/projects", token, R"({"id":")" + id + R"(","name":"P"})");
    EXPECT_EQ(a.status, 201) << json::serialize(a.body);
    return id;
  }

  auth::Verifier verifier_ = auth::Verifier::hs256(kSecret);
  ThreadPool pool_{2, 64};
  std::unique_ptr<store::Database> db_;
  std::unique_ptr<metrics::Registry> registry_;
  std::unique_ptr<jobs::DatabaseQueue> queue_;
  bool with_queue_ = true;
  http::Router router_;
  std::unique_ptr<Api> api_;
};

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

std::string enqueue(jobs::JobQueue& q, const std::string& type, const std::string& payload = "{}") {
  auto e = q.enqueue(jobs::NewJob{type, payload, "", 0, 0});
  EXPECT_TRUE(e) << e.error().detail;
  return e ? e->id : "";
}

jobs::Lease lease_one(jobs::JobQueue& q, const std::string& type) {
  auto l = q.lease(jobs::LeaseRequest{"w1", {type}, 1, std::chrono::seconds(30)});
  EXPECT_TRUE(l && l->size() == 1u);
  return l && !l->empty() ? l->front() : jobs::Lease{};
}

TEST_F(ApiTest, TheJobRoutesAreTheServiceKeys) {
  const auto user = token_for("ann");
  const auto id = enqueue(*queue_, "t.work");
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/admin/jobs"},
           {"GET", "/v1/admin/jobs/" + id},
           {"POST", "/v1/admin/jobs/" + id + "/retry"},
           {"POST", "/v1/admin/jobs/" + id + "/cancel"}}) {
    auto a = call(method, path, user);
    EXPECT_EQ(a.status, 403) << method << " " << path;
    EXPECT_EQ(a.type(), "forbidden");
  }
  EXPECT_EQ(queue_->get(id)->state, jobs::State::queued) << "a refused cancel changed the job";
}

TEST_F(ApiTest, JobsAreListedByStateAndTypeInPages) {
  std::vector<std::string> work;
  for (int i = 0; i < 5; ++i)
    work.push_back(enqueue(*queue_, "t.work", R"({"n":)" + std::to_string(i) + "}"));
  const auto other = enqueue(*queue_, "t.other");
  const auto leased = lease_one(*queue_, "t.other");
  ASSERT_EQ(leased.ref.job, other);

  std::vector<std::string> seen;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto a = call("GET",
                  "/v1/admin/jobs?type=t.work&state=queued&limit=2" +
                      (cursor.empty() ? "" : "&cursor=" + cursor),
                  kServiceKey);
    ASSERT_EQ(a.status, 200) << json::serialize(a.body);
    for (const auto& j : a.obj().at("items").as_array()) {
      EXPECT_EQ(j.at("type"), "t.work");
      EXPECT_EQ(j.at("state"), "queued");
      EXPECT_FALSE(j.as_object().contains("history")) << "a list carries no history";
      seen.emplace_back(j.at("id").as_string());
    }
    if (a.obj().at("next_cursor").is_null()) break;
    cursor = std::string(a.obj().at("next_cursor").as_string());
  }
  EXPECT_EQ(seen, work) << "every queued t.work job once, in creation order";

  auto l = call("GET", "/v1/admin/jobs?state=leased", kServiceKey);
  ASSERT_EQ(l.status, 200);
  ASSERT_EQ(l.obj().at("items").as_array().size(), 1u);
  const auto& j = l.obj().at("items").as_array()[0];
  EXPECT_EQ(j.at("id").as_string(), other);
  EXPECT_EQ(j.at("worker"), "w1");
  EXPECT_GT(j.at("lease_expires_at").as_int64(), 0);

  auto p = call("GET", "/v1/admin/jobs/" + work[3], kServiceKey);
  ASSERT_EQ(p.status, 200);
  EXPECT_EQ(p.obj().at("payload").at("n"), 3) << "the payload is JSON, not a string";
  EXPECT_TRUE(p.obj().at("history").as_array().empty());

  for (const auto& [query, says] :
       std::vector<std::pair<std::string, std::string>>{{"state=running", "'state'"},
                                                        {"type=Bad%20Type", "'type'"},
                                                        {"limit=0", "'limit'"},
                                                        {"cursor=%%%", "'cursor'"}}) {
    auto bad = call("GET", "/v1/admin/jobs?" + query, kServiceKey);
    EXPECT_EQ(bad.status, 400) << query;
    EXPECT_EQ(bad.type(), "invalid-request") << query;
    EXPECT_NE(json::serialize(bad.body).find(says), std::string::npos)
        << query << ": " << json::serialize(bad.body);
  }
}

TEST_F(ApiTest, AJobIsShownWithItsHistoryAndADeadOneRetried) {
  const auto id = enqueue(*queue_, "t.work");
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto l = lease_one(*queue_, "t.work");
    ASSERT_EQ(l.ref.attempt, attempt);
    auto f = queue_->fail(
        l.ref, jobs::FailReport{jobs::Failure::retryable, "timeout " + std::to_string(attempt)});
    ASSERT_TRUE(f);
    if (attempt == 1) {  // queued again, ready at once (the jitter's draw is 0)
      ASSERT_EQ(f->state, jobs::State::queued);
      auto r = call("POST", "/v1/admin/jobs/" + id + "/retry", kServiceKey);
      EXPECT_EQ(r.status, 409);
      EXPECT_EQ(r.type(), "job-not-dead");
    }
  }
  auto dead = call("GET", "/v1/admin/jobs/" + id, kServiceKey);
  ASSERT_EQ(dead.status, 200);
  EXPECT_EQ(dead.obj().at("state"), "dead");
  EXPECT_EQ(dead.obj().at("last_error"), "timeout 2");
  EXPECT_FALSE(dead.obj().at("finished_at").is_null());
  const auto& h = dead.obj().at("history").as_array();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].at("attempt"), 1);
  EXPECT_EQ(h[0].at("outcome"), "failed");
  EXPECT_EQ(h[0].at("error"), "timeout 1");
  EXPECT_EQ(h[1].at("worker"), "w1");

  auto r = call("POST", "/v1/admin/jobs/" + id + "/retry", kServiceKey);
  ASSERT_EQ(r.status, 200) << json::serialize(r.body);
  EXPECT_EQ(r.obj().at("state"), "queued");
  EXPECT_EQ(r.obj().at("max_attempts"), 4) << "a fresh set of attempts";
  EXPECT_EQ(r.obj().at("history").as_array().size(), 2u) << "the history is kept";
  EXPECT_EQ(lease_one(*queue_, "t.work").ref.attempt, 3);

  EXPECT_EQ(call("GET", "/v1/admin/jobs/j00000000000000000000000", kServiceKey).status, 404);
  EXPECT_EQ(call("GET", "/v1/admin/jobs/..%2F..%2Fetc", kServiceKey).status, 404);
  EXPECT_EQ(call("POST", "/v1/admin/jobs/jffff/retry", kServiceKey).type(), "not-found");
}

TEST_F(ApiTest, CancelStopsAQueuedJobAtOnceAndAsksARunningOnesWorker) {
  const auto queued = enqueue(*queue_, "t.wait");
  auto c = call("POST", "/v1/admin/jobs/" + queued + "/cancel", kServiceKey);
  ASSERT_EQ(c.status, 200) << json::serialize(c.body);
  EXPECT_EQ(c.obj().at("state"), "cancelled");
  EXPECT_TRUE(
      queue_->lease(jobs::LeaseRequest{"w1", {"t.wait"}, 1, std::chrono::seconds(30)})->empty());

  const auto running = enqueue(*queue_, "t.run");
  const auto l = lease_one(*queue_, "t.run");
  auto r = call("POST", "/v1/admin/jobs/" + running + "/cancel", kServiceKey);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.obj().at("state"), "leased");
  EXPECT_EQ(r.obj().at("cancel_requested"), true);
  auto beat = queue_->heartbeat(l.ref, 50, "", std::chrono::seconds(30));
  ASSERT_TRUE(beat);
  EXPECT_TRUE(beat->cancel_requested) << "the worker hears it at its next heartbeat";

  const auto done = enqueue(*queue_, "t.done");
  ASSERT_TRUE(queue_->complete(lease_one(*queue_, "t.done").ref, R"({"ok":true})"));
  auto f = call("POST", "/v1/admin/jobs/" + done + "/cancel", kServiceKey);
  EXPECT_EQ(f.status, 409);
  EXPECT_EQ(f.type(), "job-finished");
  auto shown = call("GET", "/v1/admin/jobs/" + done, kServiceKey);
  EXPECT_EQ(shown.obj().at("state"), "succeeded");
  EXPECT_EQ(shown.obj().at("result").at("ok"), true);
}

TEST_F(ApiTest, WithoutAJobQueueTheJobRoutesAreUnavailable) {
  with_queue_ = false;
  start({});
  auto a = call("GET", "/v1/admin/jobs", kServiceKey);
  EXPECT_EQ(a.status, 503);
  EXPECT_EQ(a.type(), "unavailable");
}

}  // namespace
}  // namespace kiln::api
