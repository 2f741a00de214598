// The terminal endpoint's bookkeeping (terminal.cpp's): how many connections live, which
// users have how many attached (the per-user limit), and who waits for none to be left (a
// drain). Thread-safe.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>

namespace kiln::gateway::detail {

// The endpoint's count of live connections, and who waits for none to be left (a drain).
struct Tracker {
  std::mutex mu;
  std::size_t live = 0;
  std::function<void()> on_empty;
  std::map<std::string, std::size_t, std::less<>> attached;  // per user
  // One more attached connection of `user`, unless it has `limit` (0: no limit).
  bool claim(const std::string& user, std::size_t limit) {
    std::lock_guard lock(mu);
    auto& n = attached[user];
    if (limit > 0 && n >= limit) {
      if (n == 0) attached.erase(user);
      return false;
    }
    ++n;
    return true;
  }
  void release(const std::string& user) {
    std::lock_guard lock(mu);
    auto it = attached.find(user);
    if (it != attached.end() && --it->second == 0) attached.erase(it);
  }
  void gone() {
    std::function<void()> fn;
    {
      std::lock_guard lock(mu);
      if (--live == 0) fn = std::exchange(on_empty, {});
    }
    if (fn) fn();
  }
};

}  // namespace kiln::gateway::detail
