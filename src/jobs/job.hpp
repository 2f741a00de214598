// The job context's vocabulary: what a job is, its states, and the rules that move it between
// them without any I/O (docs/jobs.md). The queue (queue.hpp) keeps jobs in the database,
// which is authoritative whatever carries them (the database itself, or RabbitMQ).
//
//   queued --lease--> leased --complete--> succeeded
//     ^                 |  \--fail(permanent) or attempts spent--> dead
//     |                 |---fail(retryable), lease expired: queued again after a backoff
//     \--retry (admin)--dead        queued/leased --cancel--> cancelled (a leased job's worker
//                                                            learns it at its next heartbeat)
#pragma once

#include "platform/result.hpp"
#include "store/jobs.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::jobs {

// The states, as the repository stores them ("queued", ...: store::to_string).
using State = store::JobState;
using store::to_string;

// succeeded, dead, cancelled: nothing moves the job any more (but an admin's retry of a dead
// job).
constexpr bool finished(State s) {
  return s == State::succeeded || s == State::dead || s == State::cancelled;
}

// What the queue refuses, as a value.
enum class Errc {
  not_found,    // no such job
  invalid,      // a field out of its shape or range (the detail names it)
  lease_lost,   // the caller's lease is not the job's current one (expired and taken again,
                // cancelled, finished): the worker must stop and must not report a result
  finished,     // the job is succeeded, dead or cancelled already
  not_dead,     // retry of a job that is not dead (only a dead job is retried)
  conflict,     // an idempotency key reused with another payload
  unavailable,  // the database (or broker) cannot answer now: retry later
};

using Error = ErrorOf<Errc>;

template <class T>
using Result = kiln::Result<T, Error>;

// Limits on what a job carries (a job is a pointer to work, not the work's data).
inline constexpr std::size_t kMaxTypeBytes = 64;
inline constexpr std::size_t kMaxPayloadBytes = 64 * 1024;
inline constexpr std::size_t kMaxResultBytes = 64 * 1024;
inline constexpr std::size_t kMaxKeyBytes = 200;
inline constexpr std::size_t kMaxStatusBytes = 200;
inline constexpr std::size_t kMaxErrorBytes = 2000;

// A job type: 1-64 of [a-z0-9._-], starting with a letter ("asset.process").
bool valid_type(std::string_view type);

// Per-type handler limits, "type=n[,type=n...]" (the setting jobs.type_concurrency; spaces
// around items and around `=` allowed; "" is none): at most n (1..max) handlers of that type
// at once. Errc::invalid naming the first bad item: not `type=n`, a bad type (valid_type),
// n not a whole number in 1..max, a type named twice, an empty item.
Result<std::map<std::string, int, std::less<>>> parse_type_limits(std::string_view text, int max);

// How a type's failures are retried: at most `max_attempts` attempts in all; after a
// retryable failure (or an expired lease) the next attempt waits a backoff with full jitter
// (AWS Architecture Blog, "Exponential Backoff And Jitter"): uniform in
// [0, min(cap, base * 2^(attempt-1))].
struct RetryPolicy {
  int max_attempts = 5;
  std::chrono::milliseconds base{1'000};
  std::chrono::milliseconds cap{10 * 60'000};
};

// The wait before the attempt after `attempt` (1-based) failed; `unit` in [0, 1) is the
// jitter's random draw (injected: tests pass fixed values).
std::chrono::milliseconds backoff(const RetryPolicy& p, int attempt, double unit);

enum class Failure {
  retryable,  // may succeed on another attempt (a timeout, an outage)
  permanent,  // will not (a malformed input): dead at once
};

// What a failed attempt leads to: queued again after `delay`, or dead.
struct AfterFailure {
  State next = State::dead;
  std::chrono::milliseconds delay{0};
};
AfterFailure after_failure(const RetryPolicy& p, int attempt, Failure f, double unit);

// A string cut to at most `max` bytes without splitting a UTF-8 sequence (status lines,
// errors: a handler's text is stored, never refused for its length).
std::string clip(std::string_view s, std::size_t max);

}  // namespace kiln::jobs
