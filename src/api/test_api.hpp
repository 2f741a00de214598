// The fixture of the API's in-process tests (api_test.cpp, jobs_test.cpp): a request in, a
// response out, no socket. The database is a real SQLite file (removed when the test process
// exits); object storage is configured but never reached (single-PUT uploads are planned and signed
// without a storage call); the job routes have a database job queue. What needs the wire
// (HTTP framing, the gateway, S3) is tested end to end in tests/e2e.
#pragma once

#include "api/api.hpp"

#include "auth/jwt.hpp"
#include "jobs/database_queue.hpp"
#include "platform/metrics.hpp"
#include "platform/thread_pool.hpp"
#include "store/test_sqlite.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <future>

namespace kiln::api::test {

namespace json = boost::json;

inline constexpr const char* kSecret = "a-test-secret-of-at-least-32-bytes!!";
inline constexpr const char* kServiceKey = "service-key-for-tests";

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
    auto o = store::test::temp_sqlite("api");
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

}  // namespace kiln::api::test
