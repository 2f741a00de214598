// The admin routes of the job queue (/v1/admin/jobs, docs/jobs.md) in process
// (test_api.hpp) on a database queue: the service key only, lists by state and type in
// pages, a job with its history, retry of a dead job, cancel.
#include "api/test_api.hpp"

namespace kiln::api {
namespace {

using namespace test;

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
