// Who may join which room, decided from live membership (the database), not from the token:
// a token proves who the caller is, the project's members and scenes say what they may do.
//
// One entry per project: whether it is live, every member's role, its live scenes. Entries
// are read through a Loader (the database, off the event loop) and kept for `ttl`; an access
// change announced on the access bus makes the gateway read the entry again at once (stale
// by milliseconds), and the gateway reads every project in use again every `ttl` (what the
// bus lost is applied within `ttl` plus one read). A join is let in from a fresh entry;
// anything else (a refusal: not a member, no such scene; or no fresh entry) is decided by a
// read that began after the join arrived: a user added or a scene created a moment ago is
// let in at once, whether or not the bus has delivered the change. Reads are one at a time
// per project (joins and changes that arrive during one share the next), so refused joins
// cost one read per project at a time however many arrive.
//
// When the database cannot answer, an entry read less than `stale_max` ago still lets
// members in (joins go on through a short outage), but never refuses (the change that
// allows the join may be newer than it); otherwise the join is refused as unavailable with
// a retry hint. Thread-safe; answers come from the loader's thread or inline.
#pragma once

#include "auth/jwt.hpp"
#include "collab/errors.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::gateway {

struct ProjectAccess {
  bool live = false;                                     // exists and is not deleted
  std::map<std::string, auth::Role, std::less<>> roles;  // user id -> role
  std::set<std::string, std::less<>> scenes;             // live scene ids
  // Which read of the AccessCache produced this (set by the cache; increasing over all its
  // reads, so a later read of a project has a larger number). 0: not from a cache.
  std::uint64_t read = 0;
};

// The answer to "may `user` join `room`": code Ok with the role, or why not.
struct AccessDecision {
  collab::Code code = collab::Code::Ok;
  auth::Role role = auth::Role::Viewer;
  std::string message;
  std::int64_t after_ms = 0;  // Unavailable: try again after this long
  std::uint64_t read = 0;     // ProjectAccess::read of the entry it was judged from
};

// Judges one room (`project/scene`) against a project's entry.
AccessDecision judge(const ProjectAccess& access, std::string_view user, std::string_view room);

struct AccessCacheOptions {
  std::chrono::milliseconds ttl{5'000};
  std::chrono::milliseconds stale_max{300'000};
  std::size_t max_projects = 100'000;  // entries beyond it (not in use) are dropped first
};

class AccessCache {
 public:
  using Clock = std::chrono::steady_clock;
  using Shared = std::shared_ptr<const ProjectAccess>;
  // Reads a project; answers (any thread) with its access, or nullopt and why the
  // database could not say.
  using Loader = std::function<void(
      const std::string& project, std::function<void(std::optional<ProjectAccess>, std::string)>)>;

  AccessCache(
      AccessCacheOptions options, Loader loader,
      std::function<Clock::time_point()> now = [] { return Clock::now(); });

  // May `user` join `room`? `done` runs once, inline or on the loader's thread.
  void decide(const std::string& user, const std::string& room,
              std::function<void(AccessDecision)> done);

  // An access change of `project` was announced: reads that began before now may predate
  // it. Returns the smallest ProjectAccess::read that reflects it (every read begun after
  // this call has one at least this large): what a session compares a read against before
  // it lets the read undo an announced change it has applied.
  std::uint64_t announce(const std::string& project);

  // Reads the project again (an access change was announced, or the periodic refresh) and
  // gives the fresh entry to `done`, or null when the database could not answer (the old
  // entry, if any, stays). A read already running when this is called is not trusted (it
  // may have read before the change): `done` gets the one after it.
  void reload(const std::string& project, std::function<void(Shared)> done);

  // Whether an entry of the project is held (an announced change need not be read ahead
  // for a project this node holds nothing of: its next join reads it).
  [[nodiscard]] bool holds(const std::string& project) const;

  // Drops entries of projects not in `in_use` read more than `ttl` ago.
  void sweep(const std::set<std::string, std::less<>>& in_use);

  struct Stats {
    std::uint64_t hits = 0;     // decided from a fresh entry
    std::uint64_t loads = 0;    // database reads
    std::uint64_t failed = 0;   // reads that failed
    std::uint64_t stale = 0;    // decided from an entry older than ttl, the database down
    std::uint64_t refused = 0;  // joins refused as unavailable (nothing usable cached)
  };
  [[nodiscard]] Stats stats() const;
  [[nodiscard]] std::size_t size() const;

 private:
  struct Waiter {
    std::uint64_t min_load;  // answered by the read with this index or a later one
    std::function<void(Shared, bool fresh)> fn;
  };
  struct Entry {
    Shared data;
    Clock::time_point loaded_at{};
    std::uint64_t done = 0;      // index of the latest read ended (one runs at a time)
    std::uint64_t required = 0;  // an announced change is known from this read on
    bool loading = false;
    std::vector<Waiter> waiters;
  };
  // Adds a waiter (mu_ held); returns the read to start once the lock is released, or
  // nothing when one runs (the next starts when it ends, if a waiter needs it).
  std::function<void()> wait_locked(const std::string& project, Entry& e, std::uint64_t min_load,
                                    std::function<void(Shared, bool fresh)> waiter);
  std::function<void()> start_load_locked(const std::string& project, Entry& e);
  void loaded(const std::string& project, std::uint64_t index, std::optional<ProjectAccess> access,
              const std::string& error);

  AccessCacheOptions options_;
  Loader loader_;
  std::function<Clock::time_point()> now_;
  mutable std::mutex mu_;
  std::map<std::string, Entry, std::less<>> entries_;
  // Reads started, over every project: a read's index (ProjectAccess::read) is unique and
  // grows, and survives an entry swept and read again.
  std::uint64_t reads_ = 0;
  Stats stats_;
};

}  // namespace kiln::gateway
