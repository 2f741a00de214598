// A session's access as it changes while it is open (session.hpp): changes announced on the
// access bus, the database's reads of a project, and the order between the two.
#include "gateway/session.hpp"

namespace kiln::gateway {

using collab::Close;
using collab::Code;
namespace encode = collab::encode;

std::vector<std::string> Session::projects() {
  std::vector<std::string> out;
  std::lock_guard lock(rooms_mu_);
  for (const auto& [room, role] : rooms_) {
    auto p = collab::room_project(room);
    if (out.empty() || out.back() != p) out.emplace_back(p);
  }
  return out;
}

void Session::announced_locked(std::string_view project, std::uint64_t known_from) {
  const auto has_room = [this](std::string_view p) {  // rooms of p sort from "p/" on
    auto room = rooms_.lower_bound(std::string(p) + "/");
    return room != rooms_.end() && collab::room_project(room->first) == p;
  };
  // Entries of projects the session has no room of any more go (bounded by its rooms).
  for (auto it = known_from_.begin(); it != known_from_.end();)
    it = has_room(it->first) ? std::next(it) : known_from_.erase(it);
  if (!has_room(project)) return;
  auto& k = known_from_[std::string(project)];
  k = std::max(k, known_from);
}

bool Session::older_than_announced_locked(std::string_view project, std::uint64_t read) const {
  auto it = known_from_.find(project);
  return it != known_from_.end() && read < it->second;
}

void Session::apply_access(const collab::AccessChange& c, std::uint64_t known_from) {
  using Kind = collab::AccessChange::Kind;
  if (!authenticated_ || closed_) return;
  if (!c.project.empty() && (c.kind == Kind::ProjectDeleted || c.kind == Kind::SceneDeleted ||
                             (c.kind == Kind::Role && c.user == member_.user))) {
    std::lock_guard lock(rooms_mu_);
    announced_locked(c.project, known_from);
  }
  if (c.kind == Kind::SceneDeleted) {
    leave_for(c.project + "/" + c.scene, "scene " + c.scene + " was deleted");
    return;
  }
  if (c.kind != Kind::ProjectDeleted && c.user != member_.user) return;
  if (c.kind == Kind::Notify) {
    if (auto frame = encode::notify(c.payload)) send(std::move(*frame));
    return;
  }
  if (c.kind == Kind::Revoked) {
    close(Close::Forbidden, "your tokens were revoked");
    return;
  }
  bool in_project = false;
  bool changed = false;
  auth::Role role{};
  const bool keeps = c.kind == Kind::Role && !c.role.empty() && auth::parse_role(c.role, role);
  {
    std::lock_guard lock(rooms_mu_);
    for (auto& [room, r] : rooms_) {
      if (collab::room_project(room) != c.project) continue;
      in_project = true;
      if (keeps && r != role) {
        r = role;
        changed = true;
      }
    }
  }
  if (keeps) {
    // Told when it changes what the session may do in its rooms, or when it is a role in a
    // project the session has no room of yet; the role it already has (an announcement
    // that arrived after the join had read it) is not news.
    if (changed || !in_project) send(encode::notify_access(c.project, c.role));
    return;
  }
  if (in_project) {
    close(Close::Forbidden, c.kind == Kind::ProjectDeleted
                                ? "project " + c.project + " was deleted"
                                : "your access to project " + c.project + " was removed");
  }
}

void Session::revalidate(const std::string& project, const ProjectAccess& access) {
  if (!authenticated_ || closed_) return;
  std::vector<std::string> scenes_gone;
  std::optional<auth::Role> changed;
  bool refused = false;
  {
    std::lock_guard lock(rooms_mu_);
    if (older_than_announced_locked(project, access.read)) return;  // a later read follows
    for (auto& [room, role] : rooms_) {
      if (collab::room_project(room) != project) continue;
      auto d = judge(access, member_.user, room);
      if (d.code == Code::Forbidden) {
        refused = true;
      } else if (d.code != Code::Ok) {
        scenes_gone.push_back(room);
      } else if (d.role != role) {
        role = d.role;
        changed = d.role;
      }
    }
  }
  if (refused) {
    close(Close::Forbidden, access.live ? "your access to project " + project + " was removed"
                                        : "project " + project + " was deleted");
    return;
  }
  for (const auto& room : scenes_gone) leave_for(room, "the scene was deleted");
  if (changed) send(encode::notify_access(project, auth::to_string(*changed)));
}

}  // namespace kiln::gateway
