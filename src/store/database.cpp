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

Receipt Database::position() {
  Receipt r;
  if (replicas_.empty()) return r;
  auto c = primary_->acquire();
  auto res = c->exec("SELECT pg_current_wal_insert_lsn()::text");
  if (!res.rows.empty()) r.lsn = res.rows[0].str(0);
  return r;
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
  for (const auto& m : migrations()) v = std::max(v, m.version);
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
  for (const auto& m : migrations()) {
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

}  // namespace kiln::store
