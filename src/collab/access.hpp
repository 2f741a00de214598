// Access changes that open collaboration sessions must follow within a second: a member
// removed or given another role, a project deleted, a user's tokens revoked. The API
// publishes them; every gateway node subscribes and applies them to its sessions. In one
// process (`kiln serve`) the bus is LocalAccessBus; across nodes it runs over Redis
// (engines/redis_access_bus.hpp).
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace kiln::collab {

struct AccessChange {
  enum class Kind {
    Role,            // `user`'s role in `project` is now `role` ("" : no longer a member)
    ProjectDeleted,  // every member of `project` loses it
    Revoked,         // every token of `user` is void
    SceneDeleted,    // `scene` of `project` is gone: its room closes
    SceneCreated,    // `scene` of `project` exists now: its room may be joined
  };
  Kind kind = Kind::Role;
  std::string user;
  std::string project;
  std::string role;
  std::string scene;
};

class AccessBus {
 public:
  using Handler = std::function<void(const AccessChange&)>;
  virtual ~AccessBus() = default;
  virtual void publish(const AccessChange& change) = 0;
  // Handlers are called from any thread; register them before publishing starts.
  virtual void subscribe(Handler handler) = 0;
  // Stops delivering and releases connections; publishing afterwards does nothing useful
  // but is harmless. Idempotent.
  virtual void close() {}
};

class LocalAccessBus final : public AccessBus {
 public:
  void publish(const AccessChange& change) override {
    std::vector<Handler> handlers;
    {
      std::lock_guard lock(mu_);
      handlers = handlers_;
    }
    for (auto& h : handlers) h(change);
  }
  void subscribe(Handler handler) override {
    std::lock_guard lock(mu_);
    handlers_.push_back(std::move(handler));
  }

 private:
  std::mutex mu_;
  std::vector<Handler> handlers_;
};

}  // namespace kiln::collab
