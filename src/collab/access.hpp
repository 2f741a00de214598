// Access changes that open collaboration sessions must follow within a second: a member
// removed or given another role, a project deleted, a user's tokens revoked. The API
// publishes them; every gateway node subscribes and applies them to its sessions. In one
// process (`kiln serve`) the bus is engines::LocalAccessBus (engines/memory); across nodes
// it runs over Redis (engines/redis). Both pass collab/access_bus_conformance.hpp.
#pragma once

#include <functional>
#include <string>

namespace kiln::collab {

struct AccessChange {
  enum class Kind {
    Role,            // `user`'s role in `project` is now `role` ("" : no longer a member)
    ProjectDeleted,  // every member of `project` loses it
    Revoked,         // every token of `user` is void
    SceneDeleted,    // `scene` of `project` is gone: its room closes
    SceneCreated,    // `scene` of `project` exists now: its room may be joined
    Notify,          // tell `user`'s sessions: a `notify` frame with `payload`'s fields
  };
  Kind kind = Kind::Role;
  std::string user;
  std::string project;
  std::string role;
  std::string scene;
  // Notify: the frame's fields besides "t", a JSON object ({"kind":"asset",...}).
  std::string payload;
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

}  // namespace kiln::collab
