#include "store/projects.hpp"

#include "platform/clock.hpp"

namespace kiln::store {

Receipt Projects::upsert_user(const std::string& id, const std::string& name) {
  return db_.write([&](Connection& c) {
    c.exec(
        "INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO "
        "UPDATE SET name = excluded.name",
        {id, name, clock::unix_ms()});
  });
}

Receipt Projects::create_project(const Project& p, const std::string& owner) {
  return db_.write([&](Connection& c) {
    const auto at = p.created_at ? p.created_at : clock::unix_ms();
    c.exec(
        "INSERT INTO projects (id, name, created_by, created_at, updated_at) VALUES ($1, $2, "
        "$3, $4, $4)",
        {p.id, p.name, p.created_by, at});
    c.exec("INSERT INTO members (project_id, user_id, role, added_at) VALUES ($1, $2, 'owner', $3)",
           {p.id, owner, at});
  });
}

Receipt Projects::set_member(const std::string& project, const std::string& user,
                             const std::string& role) {
  return db_.write([&](Connection& c) {
    c.exec(
        "INSERT INTO members (project_id, user_id, role, added_at) VALUES ($1, $2, $3, $4) ON "
        "CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
        {project, user, role, clock::unix_ms()});
  });
}

Receipt Projects::create_scene(const SceneRow& s) {
  return db_.write([&](Connection& c) {
    const auto at = s.created_at ? s.created_at : clock::unix_ms();
    c.exec(
        "INSERT INTO scenes (project_id, id, name, created_at, updated_at) VALUES ($1, $2, $3, "
        "$4, $4)",
        {s.project_id, s.id, s.name, at});
    // Scene ids are never reused (a deleted scene keeps its row), so snapshots of this room
    // can only be left from before rooms had to be scenes: the new scene starts empty.
    c.exec("DELETE FROM room_snapshots WHERE room = $1", {s.project_id + "/" + s.id});
  });
}

std::vector<Project> Projects::list_projects(const std::string& user, const Receipt& after,
                                             std::size_t limit, const std::string& after_id) {
  std::vector<Project> out;
  db_.read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT p.id, p.name, p.created_by, p.created_at, m.role FROM members m JOIN projects "
        "p ON p.id = m.project_id WHERE m.user_id = $1 AND p.deleted_at IS NULL AND p.id > $2 "
        "ORDER BY p.id LIMIT $3",
        {user, after_id, static_cast<std::int64_t>(limit)});
    for (const auto& r : res.rows)
      out.push_back(Project{r.str(0), r.str(1), r.str(2), r.i64(3), r.str(4)});
  });
  return out;
}

std::optional<Project> Projects::get_project(const std::string& id, const Receipt& after) {
  std::optional<Project> out;
  db_.read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT id, name, created_by, created_at FROM projects WHERE id = $1 AND deleted_at IS "
        "NULL",
        {id});
    if (!res.rows.empty()) {
      const auto& r = res.rows[0];
      out = Project{r.str(0), r.str(1), r.str(2), r.i64(3), {}};
    }
  });
  return out;
}

std::vector<SceneRow> Projects::list_scenes(const std::string& project, const Receipt& after,
                                            std::size_t limit, const std::string& after_id) {
  std::vector<SceneRow> out;
  db_.read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT project_id, id, name, created_at, updated_at FROM scenes WHERE project_id = $1 "
        "AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3",
        {project, after_id, static_cast<std::int64_t>(limit)});
    for (const auto& r : res.rows)
      out.push_back(SceneRow{r.str(0), r.str(1), r.str(2), r.i64(3), r.i64(4)});
  });
  return out;
}

std::optional<SceneRow> Projects::get_scene(const std::string& project, const std::string& id,
                                            const Receipt& after) {
  std::optional<SceneRow> out;
  db_.read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT project_id, id, name, created_at, updated_at FROM scenes WHERE project_id = $1 "
        "AND id = $2 AND deleted_at IS NULL",
        {project, id});
    if (!res.rows.empty()) {
      const auto& r = res.rows[0];
      out = SceneRow{r.str(0), r.str(1), r.str(2), r.i64(3), r.i64(4)};
    }
  });
  return out;
}

std::string Projects::member_role(const std::string& project, const std::string& user,
                                  const Receipt& after) {
  std::string role;
  db_.read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT m.role FROM members m JOIN projects p ON p.id = m.project_id WHERE "
        "m.project_id = $1 AND m.user_id = $2 AND p.deleted_at IS NULL",
        {project, user});
    if (!res.rows.empty()) role = res.rows[0].str(0);
  });
  return role;
}

std::vector<MemberRow> Projects::list_members(const std::string& project, const Receipt& after) {
  std::vector<MemberRow> out;
  db_.read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT m.user_id, COALESCE(u.name, ''), m.role, m.added_at FROM members m LEFT JOIN "
        "users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY m.user_id",
        {project});
    for (const auto& r : res.rows) out.push_back(MemberRow{r.str(0), r.str(1), r.str(2), r.i64(3)});
  });
  return out;
}

std::map<std::string, std::string> Projects::roles_of(const std::string& user) {
  std::map<std::string, std::string> out;
  db_.on_primary([&](Connection& c) {
    auto res = c.exec(
        "SELECT m.project_id, m.role FROM members m JOIN projects p ON p.id = m.project_id "
        "WHERE m.user_id = $1 AND p.deleted_at IS NULL",
        {user});
    for (const auto& r : res.rows) out[r.str(0)] = r.str(1);
  });
  return out;
}

ProjectAccessRow Projects::project_access(const std::string& project) {
  ProjectAccessRow out;
  db_.on_primary([&](Connection& c) {
    out = ProjectAccessRow{};
    if (c.exec("SELECT 1 FROM projects WHERE id = $1 AND deleted_at IS NULL", {project})
            .rows.empty())
      return;
    out.live = true;
    for (const auto& r :
         c.exec("SELECT user_id, role FROM members WHERE project_id = $1", {project}).rows)
      out.members.emplace_back(r.str(0), r.str(1));
    for (const auto& r :
         c.exec("SELECT id FROM scenes WHERE project_id = $1 AND deleted_at IS NULL", {project})
             .rows)
      out.scenes.push_back(r.str(0));
  });
  return out;
}

std::optional<UserRow> Projects::get_user(const std::string& id) {
  std::optional<UserRow> out;
  db_.on_primary([&](Connection& c) {
    auto res = c.exec("SELECT id, name, created_at, token_version FROM users WHERE id = $1", {id});
    if (!res.rows.empty()) {
      const auto& r = res.rows[0];
      out = UserRow{r.str(0), r.str(1), r.i64(2), r.i64(3)};
    }
  });
  return out;
}

Receipt Projects::rename_project(const std::string& id, const std::string& name, bool& found) {
  return db_.write([&](Connection& c) {
    found = c.exec(
                 "UPDATE projects SET name = $2, updated_at = $3 WHERE id = $1 AND deleted_at "
                 "IS NULL",
                 {id, name, clock::unix_ms()})
                .affected == 1;
  });
}

Receipt Projects::delete_project(const std::string& id, bool& found) {
  return db_.write([&](Connection& c) {
    const auto at = clock::unix_ms();
    found = c.exec(
                 "UPDATE projects SET deleted_at = $2, updated_at = $2 WHERE id = $1 AND "
                 "deleted_at IS NULL",
                 {id, at})
                .affected == 1;
    if (found) {
      c.exec("UPDATE scenes SET deleted_at = $2 WHERE project_id = $1 AND deleted_at IS NULL",
             {id, at});
    }
  });
}

Receipt Projects::rename_scene(const std::string& project, const std::string& id,
                               const std::string& name, bool& found) {
  return db_.write([&](Connection& c) {
    found = c.exec(
                 "UPDATE scenes SET name = $3, updated_at = $4 WHERE project_id = $1 AND id = $2 "
                 "AND deleted_at IS NULL",
                 {project, id, name, clock::unix_ms()})
                .affected == 1;
  });
}

Receipt Projects::delete_scene(const std::string& project, const std::string& id, bool& found) {
  return db_.write([&](Connection& c) {
    found = c.exec(
                 "UPDATE scenes SET deleted_at = $3, updated_at = $3 WHERE project_id = $1 AND "
                 "id = $2 AND deleted_at IS NULL",
                 {project, id, clock::unix_ms()})
                .affected == 1;
  });
}

namespace {

// Locks the project's owner rows (PostgreSQL; SQLite's write lock already serialises) and
// says whether the project is live and how many owners it has.
std::pair<bool, std::int64_t> lock_owners(Connection& c, const std::string& project) {
  auto live = c.exec("SELECT 1 FROM projects WHERE id = $1 AND deleted_at IS NULL", {project});
  if (live.rows.empty()) return {false, 0};
  auto owners = c.exec(std::string("SELECT user_id FROM members WHERE project_id = $1 AND role = "
                                   "'owner'") +
                           std::string(sql::for_update(c)),
                       {project});
  return {true, static_cast<std::int64_t>(owners.rows.size())};
}

}  // namespace

MemberChange Projects::change_member(const std::string& project, const std::string& user,
                                     const std::string& role, Receipt& receipt) {
  MemberChange result = MemberChange::Done;
  receipt = db_.write([&](Connection& c) {
    auto [live, owners] = lock_owners(c, project);
    if (!live) {
      result = MemberChange::NotFound;
      return;
    }
    auto cur =
        c.exec("SELECT role FROM members WHERE project_id = $1 AND user_id = $2", {project, user});
    const bool was_owner = !cur.rows.empty() && cur.rows[0].str(0) == "owner";
    if (was_owner && role != "owner" && owners <= 1) {
      result = MemberChange::LastOwner;
      return;
    }
    c.exec(
        "INSERT INTO members (project_id, user_id, role, added_at) VALUES ($1, $2, $3, $4) ON "
        "CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
        {project, user, role, clock::unix_ms()});
  });
  return result;
}

MemberChange Projects::remove_member(const std::string& project, const std::string& user,
                                     Receipt& receipt) {
  MemberChange result = MemberChange::Done;
  receipt = db_.write([&](Connection& c) {
    auto [live, owners] = lock_owners(c, project);
    if (!live) {
      result = MemberChange::NotFound;
      return;
    }
    auto cur =
        c.exec("SELECT role FROM members WHERE project_id = $1 AND user_id = $2", {project, user});
    if (cur.rows.empty()) {
      result = MemberChange::NotFound;
      return;
    }
    if (cur.rows[0].str(0) == "owner" && owners <= 1) {
      result = MemberChange::LastOwner;
      return;
    }
    c.exec("DELETE FROM members WHERE project_id = $1 AND user_id = $2", {project, user});
  });
  return result;
}

std::int64_t Projects::revoke_tokens(const std::string& user) {
  std::int64_t version = 0;
  db_.write([&](Connection& c) {
    auto res = c.exec(
        "INSERT INTO users (id, name, created_at, token_version) VALUES ($1, $1, $2, 1) ON "
        "CONFLICT (id) DO UPDATE SET token_version = users.token_version + 1 RETURNING "
        "token_version",
        {user, clock::unix_ms()});
    version = res.rows.at(0).i64(0);
  });
  return version;
}

}  // namespace kiln::store
