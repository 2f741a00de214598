// Kiln's database: the schema (versioned migrations), and every query Kiln makes, written
// once for both drivers. Writes go to the primary; list/get reads go to a replica when
// `read_urls` names any, with read-your-writes: a read given the LSN of the caller's
// own write waits (bounded) for a replica that has replayed it, else reads the primary.
// A replica that fails is skipped for `replica_retry` and the read falls back to another
// replica or the primary (counted in kiln_db_reads_total{target,reason}).
//
// PgBouncer (transaction pooling): unnamed statements only, no session state (no SET,
// no LISTEN, no temp tables), locks only inside a transaction
// (pg_advisory_xact_lock for migrations), and timeouts enforced by the client (a cancel
// request when a statement runs past statement_timeout).
//
// Every method blocks; call them from the store's own threads (a thread pool) or a
// worker's, never from an event loop.
#pragma once

#include "clients/sql/pool.hpp"

#include <atomic>
#include <functional>
#include <map>

namespace kiln::metrics {
class Registry;
class Counter;
class Gauge;
}  // namespace kiln::metrics

namespace kiln::store {

// The SQL port's vocabulary, used by every repository.
using sql::Connection;
using sql::Dialect;
using sql::Error;
using sql::Row;
using sql::Value;

struct DatabaseOptions {
  std::string url;                     // the primary (sqlite:PATH or postgresql://...)
  std::vector<std::string> read_urls;  // replicas (PostgreSQL only)
  std::size_t pool_size = 8;           // per database
  sql::ConnectOptions connect;
  std::chrono::milliseconds pool_wait{5'000};
  std::chrono::milliseconds read_your_writes_wait{500};
  std::chrono::milliseconds replica_retry{5'000};
};

// A write's position in the primary's WAL ("" on SQLite, or with no replicas): give it
// to a later read to read your own write.
struct Receipt {
  std::string lsn;
};

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

struct RoomSnapshot {
  std::string room;
  std::uint64_t seq = 0;
  std::string epoch;
  std::string body;  // the scene's snapshot, JSON
  std::int64_t stored_at = 0;
};

enum class SaveResult {
  Stored,    // a new snapshot row
  NotNewer,  // one at this seq or later is stored already: nothing written
  LeaseLost  // another worker holds the room now: nothing written
};

class Database {
 public:
  explicit Database(DatabaseOptions options, metrics::Registry* registry = nullptr);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  [[nodiscard]] Dialect dialect() const { return dialect_; }
  [[nodiscard]] bool has_replicas() const { return !replicas_.empty(); }

  // --- schema ---------------------------------------------------------------------------
  // Applies the migrations not applied yet, each in its own transaction; safe when several
  // processes start at once. Returns how many it applied. Throws when the database's
  // schema is newer than this binary knows.
  int migrate();
  [[nodiscard]] int schema_version();
  [[nodiscard]] static int latest_schema_version();
  // One round trip to the primary; throws Error when it is unreachable.
  void ping();

  // --- rooms: the write-behind persister ------------------------------------------------
  // Takes or renews the room's lease for `ttl` (database clock). False when another holder
  // has an unexpired lease.
  bool acquire_lease(const std::string& room, const std::string& holder,
                     std::chrono::milliseconds ttl);
  // In one transaction: checks that `holder` still holds the lease (and renews it), stores
  // the snapshot only if newer than every stored one, and keeps only the newest `keep`.
  SaveResult save_snapshot(const RoomSnapshot& snapshot, const std::string& holder,
                           std::chrono::milliseconds lease_ttl, std::size_t keep);
  // The newest stored snapshot (from the primary: a replica might be behind).
  std::optional<RoomSnapshot> latest_snapshot(const std::string& room);
  // The newest stored seq of each room named that has one.
  std::map<std::string, std::uint64_t> stored_seqs(const std::vector<std::string>& rooms);

  // --- projects, members, scenes --------------------------------------------------------
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

  // Runs `fn` in a write transaction on the primary (retried on Busy); the receipt carries
  // the WAL position after the commit when there are replicas to read from.
  Receipt write(const std::function<void(Connection&)>& fn);
  // Runs `fn` on a replica per the routing rules above, or on the primary.
  void read(const Receipt& after, const std::function<void(Connection&)>& fn);

 private:
  struct Replica;
  void on_primary(const std::function<void(Connection&)>& fn);
  [[nodiscard]] std::string sql(std::string_view text) const;  // {now} -> dialect

  DatabaseOptions options_;
  Dialect dialect_;
  std::unique_ptr<sql::Pool> primary_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::atomic<std::size_t> next_replica_{0};
  metrics::Registry* registry_;
};

}  // namespace kiln::store
