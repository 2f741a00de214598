// The jobs repository: every statement on `jobs` and `job_attempts` (docs/jobs.md). The
// job queue (src/jobs) decides; these functions read and write rows on the connection they
// are given, inside the caller's transaction. Times are ms since the Unix epoch by the
// database's clock (now()). Throws sql::Error (its kind says whether retrying may help).
#pragma once

#include "clients/sql/sql.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::store {

enum class JobState { queued, leased, succeeded, dead, cancelled };

// "queued", "leased", "succeeded", "dead", "cancelled": the column's values.
std::string_view to_string(JobState s);
std::optional<JobState> job_state_from(std::string_view s);

struct JobAttempt {
  int number = 0;
  std::string worker;
  std::int64_t started_at = 0;
  std::int64_t ended_at = 0;  // 0 while running
  std::string outcome;        // "", "succeeded", "failed", "expired", "released", "cancelled"
  std::string error;
};

struct Job {
  // "j" + 12 hex digits of its creation time (ms), 4 of its creator's sequence, 6 random:
  // sorts by creation (within a millisecond, by creator).
  std::string id;
  std::string type;
  std::string payload;          // JSON
  std::string idempotency_key;  // "" when none
  int priority = 0;
  JobState state = JobState::queued;
  int attempts = 0;  // attempts leased so far
  int max_attempts = 0;
  std::int64_t not_before = 0;
  std::string worker;  // the current or last lease's holder
  std::int64_t lease_expires_at = 0;
  int progress = 0;
  std::string status;
  bool cancel_requested = false;
  std::string result;  // JSON when succeeded, else ""
  std::string last_error;
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
  std::int64_t finished_at = 0;
  std::vector<JobAttempt> history;  // filled by attempts(), not by the row reads
};

// Per type: jobs queued and leased, dead ones, the age of the oldest ready one and of the
// oldest current lease (a stuck handler shows as a growing lease age).
struct JobTypeStats {
  std::string type;
  std::int64_t queued = 0;
  std::int64_t leased = 0;
  std::int64_t dead = 0;
  std::int64_t oldest_ready_age_ms = 0;
  std::int64_t oldest_lease_age_ms = 0;  // the longest-running current attempt's age
};

namespace jobs {

// The database's clock now.
std::int64_t now(sql::Connection& c);
// A new job id for a job created at `now`.
std::string new_id(std::int64_t now);

void insert(sql::Connection& c, const Job& j);
std::optional<Job> find(sql::Connection& c, const std::string& id);
// The job, its row locked until the transaction ends (PostgreSQL; SQLite's write
// transaction is exclusive already), or nullopt.
std::optional<Job> lock(sql::Connection& c, const std::string& id);
std::optional<Job> find_by_key(sql::Connection& c, const std::string& type, const std::string& key);
// Leased jobs whose lease ended before `now`, locked, skipping rows another transaction
// holds (FOR UPDATE SKIP LOCKED on PostgreSQL), oldest lease first.
std::vector<Job> lock_expired(sql::Connection& c, std::int64_t now, std::size_t limit);
// Queued jobs of `types` whose not-before has come, locked, skipping rows another
// transaction holds: highest priority first, then the longest waiting, then by id. With
// `announced_before`: of the jobs never attempted and ready when enqueued (those a broker's
// message announces), only those ready since before it (ms).
std::vector<Job> lock_ready(sql::Connection& c, const std::vector<std::string>& types,
                            std::int64_t now, std::size_t limit,
                            std::optional<std::int64_t> announced_before = std::nullopt);
// Writes every column that changes after creation.
void update(sql::Connection& c, const Job& j);

void begin_attempt(sql::Connection& c, const std::string& job, int attempt,
                   const std::string& worker, std::int64_t now);
void end_attempt(sql::Connection& c, const std::string& job, int attempt, std::int64_t now,
                 std::string_view outcome, const std::string& error);
std::vector<JobAttempt> attempts(sql::Connection& c, const std::string& job);

// Jobs by id (creation order) after `after`, filtered by state and type when given.
std::vector<Job> list(sql::Connection& c, std::optional<JobState> state, const std::string& type,
                      const std::string& after, std::size_t limit);
std::vector<JobTypeStats> stats(sql::Connection& c, std::int64_t now);
// Deletes up to `limit` finished jobs with their attempts: succeeded and cancelled ones
// finished before `finished_before`, dead ones before `dead_before`, oldest first. Returns
// how many.
std::size_t purge(sql::Connection& c, std::int64_t finished_before, std::int64_t dead_before,
                  std::size_t limit);

}  // namespace jobs
}  // namespace kiln::store
