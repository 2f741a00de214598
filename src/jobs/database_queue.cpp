#include "jobs/database_queue.hpp"

#include "platform/utf8.hpp"

#include <boost/json/parse.hpp>

#include <algorithm>
#include <random>

namespace kiln::jobs {

namespace {

Error invalid(std::string detail) {
  return {Errc::invalid, std::move(detail)};
}

bool valid_json(std::string_view text) {
  boost::system::error_code ec;
  boost::json::parse_options po;
  po.max_depth = 32;
  (void)boost::json::parse(text, ec, {}, po);
  return !ec;
}

// Printable ASCII without spaces or quotes: keys and worker names land in logs and URLs.
bool valid_token(std::string_view s, std::size_t max) {
  return !s.empty() && s.size() <= max && std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f && c != '"' && c != '\\';
  });
}

Error lease_lost(const LeaseRef& l, const store::Job& j) {
  return {Errc::lease_lost, "job " + l.job + " attempt " + std::to_string(l.attempt) +
                                " no longer holds the lease (the job is " +
                                std::string(to_string(j.state)) + ", attempt " +
                                std::to_string(j.attempts) + ")"};
}

}  // namespace

std::optional<Error> check(const NewJob& job) {
  if (!valid_type(job.type))
    return invalid("'type' must be 1-64 characters of [a-z0-9._-] starting with a letter.");
  if (job.payload.size() > kMaxPayloadBytes)
    return invalid("'payload' is larger than " + std::to_string(kMaxPayloadBytes) + " bytes.");
  if (!utf8::valid(job.payload) || !valid_json(job.payload))
    return invalid("'payload' must be JSON.");
  if (!job.idempotency_key.empty() && !valid_token(job.idempotency_key, kMaxKeyBytes))
    return invalid("'idempotency_key' must be 1-200 printable characters without spaces.");
  if (job.priority < -1000 || job.priority > 1000)
    return invalid("'priority' must be from -1000 to 1000.");
  if (job.not_before_ms < 0) return invalid("'not_before' must not be negative.");
  return std::nullopt;
}

std::optional<Error> check(const LeaseRequest& r) {
  if (!valid_token(r.worker, 200)) return invalid("A worker needs a name (1-200 characters).");
  if (r.types.empty()) return invalid("A lease names the job types it runs.");
  for (const auto& t : r.types)
    if (!valid_type(t)) return invalid("Not a job type: '" + t + "'.");
  if (r.max_jobs < 1 || r.max_jobs > 100) return invalid("A lease takes 1 to 100 jobs.");
  if (r.duration < std::chrono::milliseconds(100) || r.duration > std::chrono::hours(24))
    return invalid("A lease lasts from 100 ms to 24 h.");
  return std::nullopt;
}

DatabaseQueue::DatabaseQueue(store::Database& db, DatabaseQueueOptions options)
    : db_(db), options_(std::move(options)) {}

const RetryPolicy& DatabaseQueue::policy(std::string_view type) const {
  auto it = options_.policies.find(type);
  return it == options_.policies.end() ? options_.default_policy : it->second;
}

std::int64_t DatabaseQueue::now(sql::Connection& c) const {
  const auto base = options_.clock_ms ? options_.clock_ms() : store::jobs::now(c);
  return base + (options_.clock_offset_ms ? options_.clock_offset_ms() : 0);
}

double DatabaseQueue::draw() const {
  if (options_.random) return options_.random();
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

namespace {

// Runs `fn` through `run` (a transaction, or the primary); a database that cannot answer
// is Errc::unavailable, any other sql::Error a bug (thrown).
template <class T, class Run>
Result<T> guarded(Run&& run, const std::function<Result<T>(sql::Connection&)>& fn) {
  std::optional<Result<T>> out;
  try {
    run([&](sql::Connection& c) { out.emplace(fn(c)); });
  } catch (const sql::Error& e) {
    if (!e.temporary()) throw;
    return Error{Errc::unavailable, std::string("the database cannot answer now: ") + e.what()};
  }
  return std::move(*out);
}

}  // namespace

template <class T>
Result<T> DatabaseQueue::write(const std::function<Result<T>(sql::Connection&)>& fn) {
  return guarded<T>([&](const auto& f) { db_.write(f); }, fn);
}

template <class T>
Result<T> DatabaseQueue::read(const std::function<Result<T>(sql::Connection&)>& fn) {
  return guarded<T>([&](const auto& f) { db_.on_primary(f); }, fn);
}

Result<Enqueued> DatabaseQueue::enqueue(const NewJob& n) {
  if (auto bad = check(n)) return *bad;
  auto existing = [&](const store::Job& j) -> Result<Enqueued> {
    if (j.payload != n.payload)
      return Error{Errc::conflict, "The idempotency key '" + n.idempotency_key + "' names job " +
                                       j.id + ", which has another payload."};
    return Enqueued{j.id, false, j.state};
  };
  auto attempt = [&]() {
    return write<Enqueued>([&](sql::Connection& c) -> Result<Enqueued> {
      if (!n.idempotency_key.empty())
        if (auto j = store::jobs::find_by_key(c, n.type, n.idempotency_key)) return existing(*j);
      const auto t = now(c);
      store::Job j;
      j.id = store::jobs::new_id(t);
      j.type = n.type;
      j.payload = n.payload;
      j.idempotency_key = n.idempotency_key;
      j.priority = n.priority;
      j.state = State::queued;
      j.max_attempts = policy(n.type).max_attempts;
      j.not_before = std::max(t, n.not_before_ms);
      j.created_at = t;
      store::jobs::insert(c, j);
      return Enqueued{j.id, true, State::queued};
    });
  };
  auto made = [&]() {
    try {
      return attempt();
    } catch (const sql::Error& e) {
      // Two enqueues with one key raced: the unique index kept one; the loser returns it.
      if (e.kind() != sql::Error::Kind::Conflict || n.idempotency_key.empty()) throw;
      return attempt();
    }
  }();
  if (made && made->created) wake();
  return made;
}

void DatabaseQueue::reap(sql::Connection& c, store::Job& j, std::int64_t t) {
  const std::string why = "the lease of " + j.worker + " expired (no heartbeat)";
  store::jobs::end_attempt(c, j.id, j.attempts, t, "expired", why);
  j.last_error = why;
  failed(j, Failure::retryable, t);
  store::jobs::update(c, j);
}

void DatabaseQueue::failed(store::Job& j, Failure kind, std::int64_t t) {
  j.updated_at = t;
  if (j.cancel_requested) {
    j.state = State::cancelled;
    j.finished_at = t;
    return;
  }
  auto p = policy(j.type);
  p.max_attempts = j.max_attempts;  // a retried dead job has more than its type's
  const auto next = after_failure(p, j.attempts, kind, draw());
  j.state = next.next;
  if (j.state == State::dead) {
    j.finished_at = t;
  } else {
    j.not_before = t + next.delay.count();
  }
}

Lease DatabaseQueue::take(sql::Connection& c, store::Job& j, const LeaseRequest& r,
                          std::int64_t t) {
  j.state = State::leased;
  j.attempts += 1;
  j.worker = r.worker;
  j.lease_expires_at = t + r.duration.count();
  j.progress = 0;
  j.status.clear();
  j.updated_at = t;
  store::jobs::update(c, j);
  store::jobs::begin_attempt(c, j.id, j.attempts, r.worker, t);
  return Lease{LeaseRef{j.id, j.attempts}, j.type, j.payload, j.idempotency_key,
               j.lease_expires_at};
}

Result<std::vector<Lease>> DatabaseQueue::lease_now(
    const LeaseRequest& r, std::optional<std::chrono::milliseconds> grace) {
  return write<std::vector<Lease>>([&](sql::Connection& c) -> Result<std::vector<Lease>> {
    const auto t = now(c);
    for (auto& j : store::jobs::lock_expired(c, t, options_.reap_batch)) reap(c, j, t);
    std::optional<std::int64_t> announced_before;
    if (grace) announced_before = t - grace->count();
    std::vector<Lease> out;
    for (auto& j : store::jobs::lock_ready(c, r.types, t, r.max_jobs, announced_before))
      out.push_back(take(c, j, r, t));
    return out;
  });
}

Result<std::vector<Lease>> DatabaseQueue::sweep(const LeaseRequest& r,
                                                std::chrono::milliseconds grace) {
  if (auto bad = check(r)) return *bad;
  return lease_now(r, grace);
}

Result<std::vector<Lease>> DatabaseQueue::lease(const LeaseRequest& r) {
  if (auto bad = check(r)) return *bad;
  const auto deadline = std::chrono::steady_clock::now() + r.wait;
  for (;;) {
    std::uint64_t seen = 0;
    {
      std::lock_guard lock(wake_mu_);
      seen = wakes_;
    }
    auto got = lease_now(r);
    const auto now = std::chrono::steady_clock::now();
    if (!got || !got->empty() || now >= deadline) return got;
    std::unique_lock lock(wake_mu_);
    wake_cv_.wait_until(lock, std::min(deadline, now + options_.poll),
                        [&] { return wakes_ != seen; });
  }
}

void DatabaseQueue::wake() {
  {
    std::lock_guard lock(wake_mu_);
    ++wakes_;
  }
  wake_cv_.notify_all();
}

Result<std::optional<Lease>> DatabaseQueue::lease_job(const std::string& id,
                                                      const LeaseRequest& r) {
  if (auto bad = check(r)) return *bad;
  return write<std::optional<Lease>>([&](sql::Connection& c) -> Result<std::optional<Lease>> {
    auto j = store::jobs::lock(c, id);
    if (!j) return Error{Errc::not_found, "No job " + id + "."};
    const auto t = now(c);
    const bool wanted = std::find(r.types.begin(), r.types.end(), j->type) != r.types.end();
    if (j->state != State::queued || j->not_before > t || !wanted) return std::nullopt;
    return take(c, *j, r, t);
  });
}

Result<store::Job> DatabaseQueue::current(sql::Connection& c, const LeaseRef& l) {
  auto j = store::jobs::lock(c, l.job);
  if (!j) return Error{Errc::not_found, "No job " + l.job + "."};
  // The fence: the job is still leased, to this attempt (a reaped or re-leased job moved on).
  if (j->state != State::leased || j->attempts != l.attempt) return lease_lost(l, *j);
  return std::move(*j);
}

Result<Beat> DatabaseQueue::heartbeat(const LeaseRef& l, int progress, std::string_view status,
                                      std::chrono::milliseconds extend) {
  if (extend < std::chrono::milliseconds(100) || extend > std::chrono::hours(24))
    return invalid("A lease is extended by 100 ms to 24 h.");
  return write<Beat>([&](sql::Connection& c) -> Result<Beat> {
    KILN_TRY(j, current(c, l));
    const auto t = now(c);
    j.progress = std::clamp(progress, 0, 100);
    j.status = clip(status, kMaxStatusBytes);
    j.lease_expires_at = t + extend.count();
    j.updated_at = t;
    store::jobs::update(c, j);
    return Beat{j.lease_expires_at, j.cancel_requested};
  });
}

Result<void> DatabaseQueue::complete(const LeaseRef& l, std::string_view result) {
  const std::string body = result.empty() ? "null" : std::string(result);
  if (body.size() > kMaxResultBytes)
    return invalid("A result is at most " + std::to_string(kMaxResultBytes) + " bytes.");
  if (!utf8::valid(body) || !valid_json(body)) return invalid("A result must be JSON.");
  return write<void>([&](sql::Connection& c) -> Result<void> {
    KILN_TRY(j, current(c, l));
    const auto t = now(c);
    store::jobs::end_attempt(c, j.id, j.attempts, t, "succeeded", "");
    j.state = State::succeeded;
    j.result = body;
    j.last_error.clear();  // the failed attempts' errors stay in the history
    j.progress = 100;
    j.updated_at = t;
    j.finished_at = t;
    store::jobs::update(c, j);
    return {};
  });
}

Result<Failed> DatabaseQueue::fail(const LeaseRef& l, const FailReport& report) {
  const auto error =
      clip(report.error.empty() ? "failed (no reason given)" : report.error, kMaxErrorBytes);
  return write<Failed>([&](sql::Connection& c) -> Result<Failed> {
    KILN_TRY(j, current(c, l));
    const auto t = now(c);
    store::jobs::end_attempt(c, j.id, j.attempts, t, j.cancel_requested ? "cancelled" : "failed",
                             error);
    j.last_error = error;
    failed(j, report.kind, t);
    Failed out;
    out.state = j.state;
    if (j.state == State::queued) out.retry_at_ms = j.not_before;
    store::jobs::update(c, j);
    return out;
  });
}

Result<void> DatabaseQueue::release(const LeaseRef& l, std::string_view why) {
  const auto reason = clip(why.empty() ? "handed back (no reason given)" : why, kMaxErrorBytes);
  auto done = write<void>([&](sql::Connection& c) -> Result<void> {
    KILN_TRY(j, current(c, l));
    const auto t = now(c);
    store::jobs::end_attempt(c, j.id, j.attempts, t, j.cancel_requested ? "cancelled" : "released",
                             reason);
    j.updated_at = t;
    if (j.cancel_requested) {
      j.state = State::cancelled;
      j.finished_at = t;
    } else {
      // The attempt is spent in the history (numbers stay unique) but not against the limit.
      j.state = State::queued;
      j.max_attempts += 1;
      j.not_before = t;
    }
    store::jobs::update(c, j);
    return {};
  });
  if (done) wake();
  return done;
}

Result<State> DatabaseQueue::cancel(const std::string& id) {
  return write<State>([&](sql::Connection& c) -> Result<State> {
    auto j = store::jobs::lock(c, id);
    if (!j) return Error{Errc::not_found, "No job " + id + "."};
    if (finished(j->state))
      return Error{Errc::finished, "Job " + id + " is " + std::string(to_string(j->state)) + "."};
    const auto t = now(c);
    j->updated_at = t;
    if (j->state == State::queued) {
      j->state = State::cancelled;
      j->finished_at = t;
      j->last_error = "cancelled before it ran";
    } else {
      j->cancel_requested = true;  // its worker hears it at its next heartbeat
    }
    store::jobs::update(c, *j);
    return j->state;
  });
}

Result<void> DatabaseQueue::retry(const std::string& id) {
  auto done = write<void>([&](sql::Connection& c) -> Result<void> {
    auto j = store::jobs::lock(c, id);
    if (!j) return Error{Errc::not_found, "No job " + id + "."};
    if (j->state != State::dead)
      return Error{Errc::not_dead, "Only a dead job is retried; job " + id + " is " +
                                       std::string(to_string(j->state)) + "."};
    const auto t = now(c);
    j->state = State::queued;
    j->max_attempts = j->attempts + policy(j->type).max_attempts;
    j->not_before = t;
    j->finished_at = 0;
    j->cancel_requested = false;
    j->updated_at = t;
    store::jobs::update(c, *j);
    return {};
  });
  if (done) wake();
  return done;
}

Result<std::size_t> DatabaseQueue::purge(std::chrono::milliseconds finished_age,
                                         std::chrono::milliseconds dead_age, std::size_t limit) {
  if (finished_age.count() < 0 || dead_age.count() < 0 || limit < 1 || limit > 10'000)
    return invalid("A purge keeps jobs for a non-negative age and deletes 1 to 10,000 at once.");
  return write<std::size_t>([&](sql::Connection& c) -> Result<std::size_t> {
    const auto t = now(c);
    return store::jobs::purge(c, t - finished_age.count(), t - dead_age.count(), limit);
  });
}

Result<Job> DatabaseQueue::get(const std::string& id) {
  return read<Job>([&](sql::Connection& c) -> Result<Job> {
    auto j = store::jobs::find(c, id);
    if (!j) return Error{Errc::not_found, "No job " + id + "."};
    j->history = store::jobs::attempts(c, id);
    return std::move(*j);
  });
}

Result<std::vector<Job>> DatabaseQueue::list(const ListRequest& r) {
  if (r.limit < 1 || r.limit > 500) return invalid("'limit' must be from 1 to 500.");
  if (!r.type.empty() && !valid_type(r.type)) return invalid("Not a job type: '" + r.type + "'.");
  return read<std::vector<Job>>([&](sql::Connection& c) -> Result<std::vector<Job>> {
    return store::jobs::list(c, r.state, r.type, r.after, r.limit);
  });
}

Result<std::vector<TypeStats>> DatabaseQueue::stats() {
  return read<std::vector<TypeStats>>([&](sql::Connection& c) -> Result<std::vector<TypeStats>> {
    return store::jobs::stats(c, now(c));
  });
}

}  // namespace kiln::jobs
