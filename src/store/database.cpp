#include "store/database.hpp"

#include "platform/clock.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"
#include "store/migrations.hpp"

#include <algorithm>
#include <thread>

namespace kiln::store {
namespace {

using Clock = std::chrono::steady_clock;

std::int64_t i64(std::uint64_t v) {
  return static_cast<std::int64_t>(v);
}

// A number for pg_advisory_xact_lock that serialises concurrent migrations ("kiln" in hex).
constexpr const char* kMigrationLock = "1802071150";

}  // namespace

struct Database::Replica {
  std::unique_ptr<sql::Pool> pool;
  std::atomic<std::int64_t> down_until{0};  // steady-clock ms; skipped until then
};

Database::Database(DatabaseOptions options, metrics::Registry* registry)
    : options_(std::move(options)), registry_(registry) {
  auto d = sql::dialect_of(options_.url);
  if (!d) {
    throw Error(Error::Kind::Other, "database.url '" + sql::redact(options_.url) +
                                        "' names no driver: use sqlite:PATH or postgresql://...");
  }
  dialect_ = *d;
  primary_ = std::make_unique<sql::Pool>(options_.url, options_.pool_size, options_.connect,
                                         options_.pool_wait);
  for (const auto& u : options_.read_urls) {
    if (sql::dialect_of(u) != Dialect::Postgres || dialect_ != Dialect::Postgres) {
      throw Error(Error::Kind::Other, "database.read_urls '" + sql::redact(u) +
                                          "': replicas must be PostgreSQL, as the primary");
    }
    auto r = std::make_unique<Replica>();
    r->pool =
        std::make_unique<sql::Pool>(u, options_.pool_size, options_.connect, options_.pool_wait);
    replicas_.push_back(std::move(r));
  }
  if (registry_) {
    // Declare the label sets up front so dashboards see zeros, not gaps.
    auto& reads = registry_->counter(
        "kiln_db_reads_total",
        "Routed reads by where they ran (replica, primary) and why (ok; lag: no replica had "
        "the caller's write in time; replica_down; replica_conflict: cancelled by recovery; "
        "no_replicas).",
        {"target", "reason"});
    reads.with({"replica", "ok"});
    reads.with({"primary", "lag"});
    reads.with({"primary", "replica_down"});
    reads.with({"primary", "no_replicas"});
    reads.with({"primary", "replica_conflict"});
    registry_
        ->counter("kiln_db_replica_failures_total",
                  "Reads that found a replica unreachable and went elsewhere.")
        .get();
  }
}

Database::~Database() = default;

std::string Database::sql(std::string_view text) const {
  static constexpr std::string_view kNow = "{now}";
  const std::string_view now = dialect_ == Dialect::Postgres
                                   ? "(extract(epoch from clock_timestamp()) * 1000)::bigint"
                                   : "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
  std::string out;
  out.reserve(text.size() + 64);
  for (std::size_t pos = 0;;) {
    auto at = text.find(kNow, pos);
    out.append(text.substr(pos, at == std::string_view::npos ? std::string_view::npos : at - pos));
    if (at == std::string_view::npos) break;
    out.append(now);
    pos = at + kNow.size();
  }
  return out;
}

void Database::on_primary(const std::function<void(Connection&)>& fn) {
  auto c = primary_->acquire();
  fn(*c);
}

Receipt Database::write(const std::function<void(Connection&)>& fn) {
  for (int attempt = 0;; ++attempt) {
    auto c = primary_->acquire();
    try {
      c->begin_write();
      fn(*c);
      c->exec("COMMIT");
    } catch (const Error& e) {
      try {
        if (c->healthy()) c->exec("ROLLBACK");
      } catch (const Error&) {
        // The connection is broken; the pool drops it.
      }
      if (e.kind() == Error::Kind::Busy && attempt < 5) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10 << attempt));
        continue;
      }
      throw;
    } catch (...) {
      try {
        if (c->healthy()) c->exec("ROLLBACK");
      } catch (const Error&) {
      }
      throw;
    }
    Receipt r;
    if (!replicas_.empty()) {
      // Where the primary's WAL is now: at or past this write's commit record.
      auto res = c->exec("SELECT pg_current_wal_insert_lsn()::text");
      if (!res.rows.empty()) r.lsn = res.rows[0].str(0);
    }
    return r;
  }
}

void Database::read(const Receipt& after, const std::function<void(Connection&)>& fn) {
  auto count = [&](const char* target, const char* reason) {
    if (registry_)
      registry_->counter("kiln_db_reads_total", "", {"target", "reason"})
          .with({target, reason})
          .inc();
  };
  if (replicas_.empty()) {
    on_primary(fn);
    count("primary", "no_replicas");
    return;
  }
  const auto steady_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
        .count();
  };
  const char* reason = "replica_down";
  const std::size_t n = replicas_.size();
  const std::size_t first = next_replica_.fetch_add(1) % n;
  const auto deadline = Clock::now() + options_.read_your_writes_wait;
  for (std::size_t k = 0; k < n; ++k) {
    Replica& rep = *replicas_[(first + k) % n];
    if (rep.down_until.load() > steady_ms()) continue;
    try {
      auto c = rep.pool->acquire();
      if (!after.lsn.empty()) {
        // Wait (bounded) until this replica has replayed the caller's write.
        bool caught_up = false;
        for (;;) {
          auto res =
              c->exec("SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, true)", {after.lsn});
          caught_up = !res.rows.empty() && res.rows[0].i64(0) == 1;
          if (caught_up || Clock::now() >= deadline) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        if (!caught_up) {
          reason = "lag";
          continue;  // another replica may be ahead; else the primary
        }
      }
      fn(*c);
      count("replica", "ok");
      return;
    } catch (const Error& e) {
      if (e.kind() == Error::Kind::Busy) {
        // Cancelled by a conflict with recovery (40001 on a hot standby): the replica is
        // fine, this read is not; the primary answers it.
        reason = "replica_conflict";
        break;
      }
      if (e.kind() != Error::Kind::Unavailable && e.kind() != Error::Kind::Timeout) throw;
      rep.down_until.store(steady_ms() + options_.replica_retry.count());
      if (registry_) registry_->counter("kiln_db_replica_failures_total", "").get().inc();
      log::warn("database replica unavailable; reading elsewhere",
                {{"replica", sql::redact(rep.pool->url())}, {"error", e.what()}});
      reason = "replica_down";
    }
  }
  on_primary(fn);
  count("primary", reason);
}

// --- schema -------------------------------------------------------------------------------

int Database::latest_schema_version() {
  int v = 0;
  for (const auto& m : kMigrations) v = std::max(v, m.version);
  return v;
}

int Database::schema_version() {
  int v = 0;
  on_primary([&](Connection& c) {
    auto exists = dialect_ == Dialect::Postgres
                      ? c.exec(
                            "SELECT count(*) FROM information_schema.tables WHERE table_name = "
                            "'schema_migrations' AND table_schema = current_schema()")
                      : c.exec(
                            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name "
                            "= 'schema_migrations'");
    if (exists.rows.empty() || exists.rows[0].i64(0) == 0) return;
    auto res = c.exec("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    v = res.rows.empty() ? 0 : static_cast<int>(res.rows[0].i64(0));
  });
  return v;
}

int Database::migrate() {
  write([&](Connection& c) {
    if (dialect_ == Dialect::Postgres)
      c.exec(std::string("SELECT pg_advisory_xact_lock(") + kMigrationLock + ")");
    c.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT "
        "NOT NULL, applied_at BIGINT NOT NULL)");
  });
  const int have = schema_version();
  if (have > latest_schema_version()) {
    throw Error(Error::Kind::Other, "the database's schema is version " + std::to_string(have) +
                                        ", newer than this kiln knows (" +
                                        std::to_string(latest_schema_version()) +
                                        "): run a newer kiln");
  }
  int applied = 0;
  for (const auto& m : kMigrations) {
    write([&](Connection& c) {
      // Concurrent starters queue on the lock (PostgreSQL) or the write lock (SQLite); the
      // loser then finds the version applied and skips it.
      if (dialect_ == Dialect::Postgres)
        c.exec(std::string("SELECT pg_advisory_xact_lock(") + kMigrationLock + ")");
      auto done =
          c.exec("SELECT 1 FROM schema_migrations WHERE version = $1", {std::int64_t{m.version}});
      if (!done.rows.empty()) return;
      c.exec(m.sql);
      c.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
             {std::int64_t{m.version}, std::string(m.name), clock::unix_ms()});
      ++applied;
      log::info("database migration applied", {{"version", m.version}, {"name", m.name}});
    });
  }
  return applied;
}

void Database::ping() {
  on_primary([](Connection& c) { c.exec("SELECT 1"); });
}

// --- rooms --------------------------------------------------------------------------------

bool Database::acquire_lease(const std::string& room, const std::string& holder,
                             std::chrono::milliseconds ttl) {
  bool got = false;
  const auto q =
      sql("INSERT INTO room_leases (room, holder, expires_at) VALUES ($1, $2, {now} + $3) "
          "ON CONFLICT (room) DO UPDATE SET holder = excluded.holder, expires_at = "
          "excluded.expires_at WHERE room_leases.expires_at <= {now} OR room_leases.holder = "
          "excluded.holder RETURNING holder");
  write([&](Connection& c) {
    auto res = c.exec(q, {room, holder, std::int64_t{ttl.count()}});
    got = !res.rows.empty();
  });
  return got;
}

SaveResult Database::save_snapshot(const RoomSnapshot& s, const std::string& holder,
                                   std::chrono::milliseconds lease_ttl, std::size_t keep) {
  SaveResult result = SaveResult::Stored;
  const auto renew =
      sql("UPDATE room_leases SET expires_at = {now} + $3 WHERE room = $1 AND holder = $2 AND "
          "expires_at > {now}");
  write([&](Connection& c) {
    // The lease is the fence: a worker that lost it (paused past its expiry) writes nothing.
    if (c.exec(renew, {s.room, holder, std::int64_t{lease_ttl.count()}}).affected != 1) {
      result = SaveResult::LeaseLost;
      return;
    }
    auto cur = c.exec("SELECT MAX(seq) FROM room_snapshots WHERE room = $1", {s.room});
    if (!cur.rows.empty() && !cur.rows[0].null(0) &&
        cur.rows[0].i64(0) >= static_cast<std::int64_t>(s.seq)) {
      result = SaveResult::NotNewer;
      return;
    }
    c.exec(
        "INSERT INTO room_snapshots (room, seq, epoch, body, bytes, stored_at, writer) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        {s.room, i64(s.seq), s.epoch, s.body, static_cast<std::int64_t>(s.body.size()),
         clock::unix_ms(), holder});
    c.exec(
        "DELETE FROM room_snapshots WHERE room = $1 AND seq < (SELECT MIN(seq) FROM (SELECT "
        "seq FROM room_snapshots WHERE room = $1 ORDER BY seq DESC LIMIT $2) AS newest)",
        {s.room, static_cast<std::int64_t>(std::max<std::size_t>(1, keep))});
  });
  return result;
}

std::optional<RoomSnapshot> Database::latest_snapshot(const std::string& room) {
  std::optional<RoomSnapshot> out;
  on_primary([&](Connection& c) {
    auto res = c.exec(
        "SELECT seq, epoch, body, stored_at FROM room_snapshots WHERE room = $1 ORDER BY seq "
        "DESC LIMIT 1",
        {room});
    if (res.rows.empty()) return;
    const auto& r = res.rows[0];
    out = RoomSnapshot{room, static_cast<std::uint64_t>(r.i64(0)), r.str(1), r.str(2), r.i64(3)};
  });
  return out;
}

std::map<std::string, std::uint64_t> Database::stored_seqs(const std::vector<std::string>& rooms) {
  std::map<std::string, std::uint64_t> out;
  constexpr std::size_t kChunk = 200;
  for (std::size_t i = 0; i < rooms.size(); i += kChunk) {
    const std::size_t n = std::min(kChunk, rooms.size() - i);
    std::string q = "SELECT room, MAX(seq) FROM room_snapshots WHERE room IN (";
    std::vector<Value> params;
    params.reserve(n);
    for (std::size_t k = 0; k < n; ++k) {
      q += (k ? ", $" : "$") + std::to_string(k + 1);
      params.emplace_back(rooms[i + k]);
    }
    q += ") GROUP BY room";
    on_primary([&](Connection& c) {
      for (const auto& r : c.exec(q, params).rows)
        out[r.str(0)] = static_cast<std::uint64_t>(r.i64(1));
    });
  }
  return out;
}

// --- projects, members, scenes ------------------------------------------------------------

Receipt Database::upsert_user(const std::string& id, const std::string& name) {
  return write([&](Connection& c) {
    c.exec(
        "INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO "
        "UPDATE SET name = excluded.name",
        {id, name, clock::unix_ms()});
  });
}

Receipt Database::create_project(const Project& p, const std::string& owner) {
  return write([&](Connection& c) {
    const auto at = p.created_at ? p.created_at : clock::unix_ms();
    c.exec(
        "INSERT INTO projects (id, name, created_by, created_at, updated_at) VALUES ($1, $2, "
        "$3, $4, $4)",
        {p.id, p.name, p.created_by, at});
    c.exec("INSERT INTO members (project_id, user_id, role, added_at) VALUES ($1, $2, 'owner', $3)",
           {p.id, owner, at});
  });
}

Receipt Database::set_member(const std::string& project, const std::string& user,
                             const std::string& role) {
  return write([&](Connection& c) {
    c.exec(
        "INSERT INTO members (project_id, user_id, role, added_at) VALUES ($1, $2, $3, $4) ON "
        "CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
        {project, user, role, clock::unix_ms()});
  });
}

Receipt Database::create_scene(const SceneRow& s) {
  return write([&](Connection& c) {
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

std::vector<Project> Database::list_projects(const std::string& user, const Receipt& after,
                                             std::size_t limit, const std::string& after_id) {
  std::vector<Project> out;
  read(after, [&](Connection& c) {
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

std::optional<Project> Database::get_project(const std::string& id, const Receipt& after) {
  std::optional<Project> out;
  read(after, [&](Connection& c) {
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

std::vector<SceneRow> Database::list_scenes(const std::string& project, const Receipt& after,
                                            std::size_t limit, const std::string& after_id) {
  std::vector<SceneRow> out;
  read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT project_id, id, name, created_at, updated_at FROM scenes WHERE project_id = $1 "
        "AND deleted_at IS NULL AND id > $2 ORDER BY id LIMIT $3",
        {project, after_id, static_cast<std::int64_t>(limit)});
    for (const auto& r : res.rows)
      out.push_back(SceneRow{r.str(0), r.str(1), r.str(2), r.i64(3), r.i64(4)});
  });
  return out;
}

std::optional<SceneRow> Database::get_scene(const std::string& project, const std::string& id,
                                            const Receipt& after) {
  std::optional<SceneRow> out;
  read(after, [&](Connection& c) {
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

std::string Database::member_role(const std::string& project, const std::string& user,
                                  const Receipt& after) {
  std::string role;
  read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT m.role FROM members m JOIN projects p ON p.id = m.project_id WHERE "
        "m.project_id = $1 AND m.user_id = $2 AND p.deleted_at IS NULL",
        {project, user});
    if (!res.rows.empty()) role = res.rows[0].str(0);
  });
  return role;
}

std::vector<MemberRow> Database::list_members(const std::string& project, const Receipt& after) {
  std::vector<MemberRow> out;
  read(after, [&](Connection& c) {
    auto res = c.exec(
        "SELECT m.user_id, COALESCE(u.name, ''), m.role, m.added_at FROM members m LEFT JOIN "
        "users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY m.user_id",
        {project});
    for (const auto& r : res.rows) out.push_back(MemberRow{r.str(0), r.str(1), r.str(2), r.i64(3)});
  });
  return out;
}

std::map<std::string, std::string> Database::roles_of(const std::string& user) {
  std::map<std::string, std::string> out;
  on_primary([&](Connection& c) {
    auto res = c.exec(
        "SELECT m.project_id, m.role FROM members m JOIN projects p ON p.id = m.project_id "
        "WHERE m.user_id = $1 AND p.deleted_at IS NULL",
        {user});
    for (const auto& r : res.rows) out[r.str(0)] = r.str(1);
  });
  return out;
}

ProjectAccessRow Database::project_access(const std::string& project) {
  ProjectAccessRow out;
  on_primary([&](Connection& c) {
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

std::optional<UserRow> Database::get_user(const std::string& id) {
  std::optional<UserRow> out;
  on_primary([&](Connection& c) {
    auto res = c.exec("SELECT id, name, created_at, token_version FROM users WHERE id = $1", {id});
    if (!res.rows.empty()) {
      const auto& r = res.rows[0];
      out = UserRow{r.str(0), r.str(1), r.i64(2), r.i64(3)};
    }
  });
  return out;
}

Receipt Database::rename_project(const std::string& id, const std::string& name, bool& found) {
  return write([&](Connection& c) {
    found = c.exec(
                 "UPDATE projects SET name = $2, updated_at = $3 WHERE id = $1 AND deleted_at "
                 "IS NULL",
                 {id, name, clock::unix_ms()})
                .affected == 1;
  });
}

Receipt Database::delete_project(const std::string& id, bool& found) {
  return write([&](Connection& c) {
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

Receipt Database::rename_scene(const std::string& project, const std::string& id,
                               const std::string& name, bool& found) {
  return write([&](Connection& c) {
    found = c.exec(
                 "UPDATE scenes SET name = $3, updated_at = $4 WHERE project_id = $1 AND id = $2 "
                 "AND deleted_at IS NULL",
                 {project, id, name, clock::unix_ms()})
                .affected == 1;
  });
}

Receipt Database::delete_scene(const std::string& project, const std::string& id, bool& found) {
  return write([&](Connection& c) {
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

MemberChange Database::change_member(const std::string& project, const std::string& user,
                                     const std::string& role, Receipt& receipt) {
  MemberChange result = MemberChange::Done;
  receipt = write([&](Connection& c) {
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

MemberChange Database::remove_member(const std::string& project, const std::string& user,
                                     Receipt& receipt) {
  MemberChange result = MemberChange::Done;
  receipt = write([&](Connection& c) {
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

std::int64_t Database::revoke_tokens(const std::string& user) {
  std::int64_t version = 0;
  write([&](Connection& c) {
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
