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

  // Runs `fn` in a write transaction on the primary (retried on Busy); the receipt carries
  // the WAL position after the commit when there are replicas to read from.
  Receipt write(const std::function<void(Connection&)>& fn);
  // Where the primary's WAL is now ("" on SQLite or with no replicas): a receipt for writes
  // made where no receipt came back (a service that wrote, then refused).
  Receipt position();
  // Runs `fn` on a replica per the routing rules above, or on the primary.
  void read(const Receipt& after, const std::function<void(Connection&)>& fn);
  // Runs `fn` on the primary outside a transaction: a read that must not lag (what a
  // replica may not have replayed yet).
  void on_primary(const std::function<void(Connection&)>& fn);

 private:
  struct Replica;

  DatabaseOptions options_;
  Dialect dialect_;
  std::unique_ptr<sql::Pool> primary_;
  std::vector<std::unique_ptr<Replica>> replicas_;
  std::atomic<std::size_t> next_replica_{0};
  metrics::Registry* registry_;
};

}  // namespace kiln::store
