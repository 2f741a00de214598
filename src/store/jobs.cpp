#include "store/jobs.hpp"

#include "platform/ids.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <iterator>
#include <tuple>

namespace kiln::store {

std::string_view to_string(JobState s) {
  switch (s) {
    case JobState::queued:
      return "queued";
    case JobState::leased:
      return "leased";
    case JobState::succeeded:
      return "succeeded";
    case JobState::dead:
      return "dead";
    case JobState::cancelled:
      return "cancelled";
  }
  return "queued";
}

std::optional<JobState> job_state_from(std::string_view s) {
  for (auto st : {JobState::queued, JobState::leased, JobState::succeeded, JobState::dead,
                  JobState::cancelled})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

namespace jobs {
namespace {

constexpr std::string_view kColumns =
    "id, type, payload, idempotency_key, priority, state, attempts, max_attempts, not_before, "
    "worker, lease_expires_at, progress, status, cancel_requested, result, last_error, "
    "created_at, updated_at, finished_at";

Job job_of(const sql::Row& r) {
  Job j;
  j.id = r.str(0);
  j.type = r.str(1);
  j.payload = r.str(2);
  j.idempotency_key = r.str(3);
  j.priority = static_cast<int>(r.i64(4));
  j.state = job_state_from(r.str(5)).value_or(JobState::queued);
  j.attempts = static_cast<int>(r.i64(6));
  j.max_attempts = static_cast<int>(r.i64(7));
  j.not_before = r.i64(8);
  j.worker = r.str(9);
  j.lease_expires_at = r.i64(10);
  j.progress = static_cast<int>(r.i64(11));
  j.status = r.str(12);
  j.cancel_requested = r.i64(13) != 0;
  j.result = r.str(14);
  j.last_error = r.str(15);
  j.created_at = r.i64(16);
  j.updated_at = r.i64(17);
  j.finished_at = r.i64(18);
  return j;
}

std::vector<Job> jobs_of(const sql::Result& res) {
  std::vector<Job> out;
  out.reserve(res.rows.size());
  for (const auto& r : res.rows) out.push_back(job_of(r));
  return out;
}

std::string select() {
  return "SELECT " + std::string(kColumns) + " FROM jobs ";
}

// " FOR UPDATE SKIP LOCKED" on PostgreSQL: concurrent leasers take different rows instead of
// waiting for each other; "" on SQLite, whose write transaction excludes other writers.
std::string_view skip_locked(const sql::Connection& c) {
  return c.dialect() == sql::Dialect::Postgres ? " FOR UPDATE SKIP LOCKED" : "";
}

sql::Value text_or_null(const std::string& s) {
  return s.empty() ? sql::Value{} : sql::Value{s};
}

}  // namespace

std::int64_t now(sql::Connection& c) {
  return c.exec(sql::with_now(c.dialect(), "SELECT {now}")).rows.at(0).i64(0);
}

std::string new_id(std::int64_t now) {
  // Creation time, then this process's sequence (ids made here in one ms stay in order),
  // then randomness (ids made on other nodes in the same ms do not collide).
  static std::atomic<std::uint32_t> sequence{0};
  char head[24];
  std::snprintf(head, sizeof head, "%012llx%04x",
                static_cast<unsigned long long>(now < 0 ? 0 : now) & 0xffffffffffffULL,
                static_cast<unsigned>(sequence.fetch_add(1) & 0xffff));
  return "j" + std::string(head) + ids::random_hex(3);
}

void insert(sql::Connection& c, const Job& j) {
  c.exec(
      "INSERT INTO jobs (id, type, payload, idempotency_key, priority, state, attempts, "
      "max_attempts, not_before, created_at, updated_at) "
      "VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $9)",
      {j.id, j.type, j.payload, text_or_null(j.idempotency_key),
       static_cast<std::int64_t>(j.priority), std::string(to_string(j.state)),
       static_cast<std::int64_t>(j.max_attempts), j.not_before, j.created_at});
}

std::optional<Job> find(sql::Connection& c, const std::string& id) {
  auto res = c.exec(select() + "WHERE id = $1", {id});
  if (res.rows.empty()) return std::nullopt;
  return job_of(res.rows[0]);
}

std::optional<Job> lock(sql::Connection& c, const std::string& id) {
  auto res = c.exec(select() + "WHERE id = $1" + std::string(sql::for_update(c)), {id});
  if (res.rows.empty()) return std::nullopt;
  return job_of(res.rows[0]);
}

std::optional<Job> find_by_key(sql::Connection& c, const std::string& type,
                               const std::string& key) {
  auto res = c.exec(select() + "WHERE type = $1 AND idempotency_key = $2", {type, key});
  if (res.rows.empty()) return std::nullopt;
  return job_of(res.rows[0]);
}

std::vector<Job> lock_expired(sql::Connection& c, std::int64_t now, std::size_t limit) {
  return jobs_of(c.exec(select() +
                            "WHERE state = 'leased' AND lease_expires_at < $1 "
                            "ORDER BY lease_expires_at, id LIMIT $2" +
                            std::string(skip_locked(c)),
                        {now, static_cast<std::int64_t>(limit)}));
}

std::vector<Job> lock_ready(sql::Connection& c, const std::vector<std::string>& types,
                            std::int64_t now, std::size_t limit,
                            std::optional<std::int64_t> announced_before) {
  // One query per type, each read in the index's order (jobs_ready: no sort of every queued
  // job), merged here. With several types, rows beyond `limit` stay locked until the
  // transaction ends: other workers skip them for that long.
  std::vector<Job> out;
  const std::string announced =
      announced_before ? "AND (attempts > 0 OR not_before > created_at OR not_before <= $4) " : "";
  for (const auto& t : types) {
    std::vector<sql::Value> params{t, now, static_cast<std::int64_t>(limit)};
    if (announced_before) params.emplace_back(*announced_before);
    auto some = jobs_of(
        c.exec(select() + "WHERE state = 'queued' AND type = $1 AND not_before <= $2 " + announced +
                   "ORDER BY priority DESC, not_before, id LIMIT $3" + std::string(skip_locked(c)),
               params));
    std::move(some.begin(), some.end(), std::back_inserter(out));
  }
  std::sort(out.begin(), out.end(), [](const Job& a, const Job& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return std::tie(a.not_before, a.id) < std::tie(b.not_before, b.id);
  });
  if (out.size() > limit) out.resize(limit);
  return out;
}

void update(sql::Connection& c, const Job& j) {
  c.exec(
      "UPDATE jobs SET state = $2, attempts = $3, max_attempts = $4, not_before = $5, "
      "worker = $6, lease_expires_at = $7, progress = $8, status = $9, cancel_requested = $10, "
      "result = $11, last_error = $12, updated_at = $13, finished_at = $14 WHERE id = $1",
      {j.id, std::string(to_string(j.state)), static_cast<std::int64_t>(j.attempts),
       static_cast<std::int64_t>(j.max_attempts), j.not_before, j.worker, j.lease_expires_at,
       static_cast<std::int64_t>(j.progress), j.status,
       static_cast<std::int64_t>(j.cancel_requested ? 1 : 0), text_or_null(j.result), j.last_error,
       j.updated_at, j.finished_at});
}

void begin_attempt(sql::Connection& c, const std::string& job, int attempt,
                   const std::string& worker, std::int64_t now) {
  c.exec("INSERT INTO job_attempts (job_id, attempt, worker, started_at) VALUES ($1, $2, $3, $4)",
         {job, static_cast<std::int64_t>(attempt), worker, now});
}

void end_attempt(sql::Connection& c, const std::string& job, int attempt, std::int64_t now,
                 std::string_view outcome, const std::string& error) {
  c.exec(
      "UPDATE job_attempts SET ended_at = $3, outcome = $4, error = $5 "
      "WHERE job_id = $1 AND attempt = $2",
      {job, static_cast<std::int64_t>(attempt), now, std::string(outcome), error});
}

std::vector<JobAttempt> attempts(sql::Connection& c, const std::string& job) {
  std::vector<JobAttempt> out;
  for (const auto& r : c.exec("SELECT attempt, worker, started_at, ended_at, outcome, error "
                              "FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
                              {job})
                           .rows)
    out.push_back(
        JobAttempt{static_cast<int>(r.i64(0)), r.str(1), r.i64(2), r.i64(3), r.str(4), r.str(5)});
  return out;
}

std::vector<Job> list(sql::Connection& c, std::optional<JobState> state, const std::string& type,
                      const std::string& after, std::size_t limit) {
  std::string where = "WHERE id > $1";
  std::vector<sql::Value> params{after, static_cast<std::int64_t>(limit)};
  if (state) {
    params.emplace_back(std::string(to_string(*state)));
    where += " AND state = $" + std::to_string(params.size());
  }
  if (!type.empty()) {
    params.emplace_back(type);
    where += " AND type = $" + std::to_string(params.size());
  }
  return jobs_of(c.exec(select() + where + " ORDER BY id LIMIT $2", params));
}

std::vector<JobTypeStats> stats(sql::Connection& c, std::int64_t now) {
  std::vector<JobTypeStats> out;
  for (const auto& r :
       c.exec("SELECT type, "
              "SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END), "
              "SUM(CASE WHEN state = 'leased' THEN 1 ELSE 0 END), "
              "SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), "
              "MIN(CASE WHEN state = 'queued' AND not_before <= $1 THEN not_before END) "
              "FROM jobs WHERE state IN ('queued', 'leased', 'dead') GROUP BY type ORDER BY type",
              {now})
           .rows) {
    const std::int64_t oldest = r.null(4) ? 0 : now - r.i64(4);
    out.push_back(JobTypeStats{r.str(0), r.i64(1), r.i64(2), r.i64(3), oldest < 0 ? 0 : oldest, 0});
  }
  // The current attempt of each leased job started when its lease began.
  for (const auto& r : c.exec("SELECT j.type, MIN(a.started_at) FROM jobs j "
                              "JOIN job_attempts a ON a.job_id = j.id AND a.attempt = j.attempts "
                              "WHERE j.state = 'leased' GROUP BY j.type",
                              {})
                           .rows) {
    for (auto& t : out)
      if (t.type == r.str(0) && !r.null(1))
        t.oldest_lease_age_ms = std::max<std::int64_t>(0, now - r.i64(1));
  }
  return out;
}

std::size_t purge(sql::Connection& c, std::int64_t finished_before, std::int64_t dead_before,
                  std::size_t limit) {
  const auto rows =
      c.exec(
           "SELECT id FROM jobs WHERE (state IN ('succeeded', 'cancelled') AND finished_at < $1) "
           "OR (state = 'dead' AND finished_at < $2) ORDER BY finished_at LIMIT $3" +
               std::string(skip_locked(c)),
           {finished_before, dead_before, static_cast<std::int64_t>(limit)})
          .rows;
  for (const auto& r : rows) {
    const auto id = r.str(0);
    c.exec("DELETE FROM job_attempts WHERE job_id = $1", {id});
    c.exec("DELETE FROM jobs WHERE id = $1", {id});
  }
  return rows.size();
}

}  // namespace jobs
}  // namespace kiln::store
