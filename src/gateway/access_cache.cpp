#include "gateway/access_cache.hpp"

#include "collab/protocol.hpp"

#include <algorithm>

namespace kiln::gateway {

using collab::Code;

AccessDecision judge(const ProjectAccess& access, std::string_view user, std::string_view room) {
  const auto project = collab::room_project(room);
  const auto scene = room.size() > project.size() ? room.substr(project.size() + 1) : "";
  AccessDecision d;
  d.read = access.read;
  auto role = access.roles.find(user);
  if (!access.live || role == access.roles.end()) {
    // The same answer for a project that does not exist: its existence is not told.
    d.code = Code::Forbidden;
    d.message = "no role in this project";
    return d;
  }
  if (access.scenes.find(scene) == access.scenes.end()) {
    d.code = Code::NotFound;
    d.message = "project " + std::string(project) + " has no scene '" + std::string(scene) +
                "' (scenes are created with POST /v1/projects/" + std::string(project) +
                "/scenes; the id of a deleted scene is not used again)";
    return d;
  }
  d.role = role->second;
  return d;
}

AccessCache::AccessCache(AccessCacheOptions options, Loader loader,
                         std::function<Clock::time_point()> now)
    : options_(options), loader_(std::move(loader)), now_(std::move(now)) {}

void AccessCache::decide(const std::string& user, const std::string& room,
                         std::function<void(AccessDecision)> done) {
  const std::string project(collab::room_project(room));
  std::function<void()> start;
  {
    std::lock_guard lock(mu_);
    auto& e = entries_[project];
    if (e.required > e.done) {
      // A change was announced and is being read: nobody is let in from the entry before.
    } else if (e.data && now_() - e.loaded_at < options_.ttl) {
      auto d = judge(*e.data, user, room);
      if (d.code == Code::Ok) {
        ++stats_.hits;
        start = [d = std::move(d), done = std::move(done)]() mutable { done(std::move(d)); };
      }
    }
    if (!start) {
      // A read that began before the join arrived may predate the change that allows it
      // (a scene created a moment ago, its bus message not here yet): only one begun after.
      const auto min_load = std::max(reads_ + 1, e.required);
      start = wait_locked(project, e, min_load, [this, user, room, done](Shared data, bool fresh) {
        auto d = data ? judge(*data, user, room) : AccessDecision{};
        // Without a fresh read only a let-in is taken from the old entry: a refusal from it
        // could be older than the change that allows the join (a scene just created).
        if (!data || (!fresh && d.code != Code::Ok)) {
          {
            std::lock_guard l(mu_);
            ++stats_.refused;
          }
          d = AccessDecision{};
          d.code = Code::Unavailable;
          d.message = "access cannot be checked now (the database does not answer); try again";
          d.after_ms = 1'000;
          done(std::move(d));
          return;
        }
        if (!fresh) {
          std::lock_guard l(mu_);
          ++stats_.stale;
        }
        done(std::move(d));
      });
    }
  }
  if (start) start();
}

std::uint64_t AccessCache::announce(const std::string& project) {
  std::lock_guard lock(mu_);
  // A project with no entry has nothing to distrust: its next read begins after this.
  if (auto it = entries_.find(project); it != entries_.end()) it->second.required = reads_ + 1;
  return reads_ + 1;
}

void AccessCache::reload(const std::string& project, std::function<void(Shared)> done) {
  std::function<void()> start;
  {
    std::lock_guard lock(mu_);
    auto& e = entries_[project];
    // A read running now may predate the change: only one that begins after it counts.
    e.required = reads_ + 1;
    start = wait_locked(project, e, e.required, [done = std::move(done)](Shared data, bool fresh) {
      done(fresh ? std::move(data) : nullptr);
    });
  }
  if (start) start();
}

std::function<void()> AccessCache::wait_locked(const std::string& project, Entry& e,
                                               std::uint64_t min_load,
                                               std::function<void(Shared, bool)> waiter) {
  e.waiters.push_back(Waiter{min_load, std::move(waiter)});
  if (e.loading) return {};  // the next read starts when this one ends
  return start_load_locked(project, e);
}

std::function<void()> AccessCache::start_load_locked(const std::string& project, Entry& e) {
  ++stats_.loads;
  e.loading = true;
  const auto index = ++reads_;
  // The loader may answer inline: the caller runs this after releasing the lock.
  return [this, project, index] {
    loader_(project, [this, project, index](std::optional<ProjectAccess> a, std::string why) {
      loaded(project, index, std::move(a), why);
    });
  };
}

void AccessCache::loaded(const std::string& project, std::uint64_t index,
                         std::optional<ProjectAccess> access, const std::string& /*error*/) {
  std::vector<Waiter> answered;
  Shared data;
  bool fresh = false;
  std::function<void()> next;
  {
    std::lock_guard lock(mu_);
    auto& e = entries_[project];
    e.loading = false;
    e.done = index;
    const auto now = now_();
    if (access) {
      access->read = index;
      e.data = std::make_shared<const ProjectAccess>(std::move(*access));
      e.loaded_at = now;
      data = e.data;
      fresh = true;
    } else {
      ++stats_.failed;
      if (e.data && now - e.loaded_at < options_.stale_max) data = e.data;
    }
    // Waiters that needed a read begun after this one started wait for the next.
    std::vector<Waiter> later;
    for (auto& w : e.waiters) (w.min_load <= index ? answered : later).push_back(std::move(w));
    e.waiters.swap(later);
    if (!e.waiters.empty()) next = start_load_locked(project, e);
  }
  if (next) next();
  for (auto& w : answered) w.fn(data, fresh);
}

void AccessCache::sweep(const std::set<std::string, std::less<>>& in_use) {
  std::lock_guard lock(mu_);
  const auto now = now_();
  for (auto it = entries_.begin(); it != entries_.end();) {
    const bool idle = !it->second.loading && in_use.find(it->first) == in_use.end();
    if (idle &&
        (now - it->second.loaded_at >= options_.ttl || entries_.size() > options_.max_projects)) {
      it = entries_.erase(it);
    } else {
      ++it;
    }
  }
}

bool AccessCache::holds(const std::string& project) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(project);
  return it != entries_.end() && (it->second.data || it->second.loading);
}

AccessCache::Stats AccessCache::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::size_t AccessCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

}  // namespace kiln::gateway
