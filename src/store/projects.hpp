// The projects repository: users (and their token version), projects, members with their
// roles, scenes. Writes go to the primary and return a Receipt; list/get reads take the
// caller's latest Receipt (read-your-writes on a replica). Every method blocks and throws
// sql::Error (Conflict for a duplicate id).
#pragma once

#include "store/database.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::store {

struct Project {
  std::string id;
  std::string name;
  std::string created_by;
  std::int64_t created_at = 0;  // ms since the Unix epoch
  std::string role;             // the asking user's role, when listed for a user
};

struct SceneRow {
  std::string project_id;
  std::string id;
  std::string name;
  std::int64_t created_at = 0;
  std::int64_t updated_at = 0;
};

struct MemberRow {
  std::string user_id;
  std::string name;  // from users, "" when the user never had a token
  std::string role;
  std::int64_t added_at = 0;
};

// What the collaboration gateway decides joins from: is the project live, who is a
// member with which role, which scenes are live.
struct ProjectAccessRow {
  bool live = false;
  std::vector<std::pair<std::string, std::string>> members;  // (user id, role)
  std::vector<std::string> scenes;                           // live scene ids
};

struct UserRow {
  std::string id;
  std::string name;
  std::int64_t created_at = 0;
  std::int64_t token_version = 0;  // tokens carrying a lower `ver` claim are refused
};

// What a membership change did.
enum class MemberChange {
  Done,
  NotFound,   // no such project (or member, for a removal)
  LastOwner,  // refused: the project would have no owner left
};

class Projects {
 public:
  explicit Projects(Database& db) : db_(db) {}

  Receipt upsert_user(const std::string& id, const std::string& name);
  // Creates the project with `owner` as its first owner. Error{Conflict} if the id exists.
  Receipt create_project(const Project& p, const std::string& owner);
  Receipt set_member(const std::string& project, const std::string& user, const std::string& role);
  Receipt create_scene(const SceneRow& s);
  // Reads (replica-routed). `after`: the receipt of the caller's latest write, if any.
  std::vector<Project> list_projects(const std::string& user, const Receipt& after,
                                     std::size_t limit = 100, const std::string& after_id = "");
  std::optional<Project> get_project(const std::string& id, const Receipt& after);
  std::vector<SceneRow> list_scenes(const std::string& project, const Receipt& after,
                                    std::size_t limit = 100, const std::string& after_id = "");
  std::optional<SceneRow> get_scene(const std::string& project, const std::string& id,
                                    const Receipt& after);
  // The user's role in a live project, or "" (replica-routed; pass the caller's receipt).
  std::string member_role(const std::string& project, const std::string& user,
                          const Receipt& after);
  std::vector<MemberRow> list_members(const std::string& project, const Receipt& after);
  // Every live project's role of the user, from the primary (tokens are minted from it).
  std::map<std::string, std::string> roles_of(const std::string& user);
  std::optional<UserRow> get_user(const std::string& id);  // primary
  // The project's live access, from the primary (an announced change is never read older
  // than itself from a lagging replica). Not live: members and scenes are empty.
  ProjectAccessRow project_access(const std::string& project);

  // Writes that may find nothing: `found` says whether a row changed.
  Receipt rename_project(const std::string& id, const std::string& name, bool& found);
  Receipt delete_project(const std::string& id, bool& found);  // soft
  Receipt rename_scene(const std::string& project, const std::string& id, const std::string& name,
                       bool& found);
  Receipt delete_scene(const std::string& project, const std::string& id, bool& found);  // soft
  // Adds the member or changes their role; removing or demoting the last owner is refused.
  // Concurrent changes are serialised on the project's owners (row locks on PostgreSQL,
  // the write lock on SQLite).
  MemberChange change_member(const std::string& project, const std::string& user,
                             const std::string& role, Receipt& receipt);
  MemberChange remove_member(const std::string& project, const std::string& user, Receipt& receipt);
  // Every token of the user issued so far is refused from now on (the user's token
  // version goes up; new tokens carry the new one). Returns the new version.
  std::int64_t revoke_tokens(const std::string& user);

 private:
  Database& db_;
};

}  // namespace kiln::store
