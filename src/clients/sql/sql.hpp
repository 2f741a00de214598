// The SQL port under Kiln's persistence: one connection to one database, parameters bound
// (never spliced into SQL text), rows as typed values. Two drivers: SQLite (the embedded
// default) and PostgreSQL (libpq). Kiln's SQL is written once, in the subset both speak:
// `$1` parameters, ON CONFLICT upserts, RETURNING; the few differences are in Dialect.
//
// Every call blocks the calling thread: the store runs them on its own threads, never on
// an event loop's.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace kiln::sql {

using Null = std::monostate;
using Value = std::variant<Null, std::int64_t, double, std::string>;

struct Row {
  std::vector<Value> cols;
  [[nodiscard]] bool null(std::size_t i) const { return std::holds_alternative<Null>(cols.at(i)); }
  [[nodiscard]] std::int64_t i64(std::size_t i) const;  // 0 when null
  [[nodiscard]] std::string str(std::size_t i) const;   // "" when null
};

struct Result {
  std::vector<Row> rows;
  std::int64_t affected = 0;  // rows changed by INSERT/UPDATE/DELETE
};

class Error : public std::runtime_error {
 public:
  enum class Kind {
    Unavailable,  // cannot connect, connection lost, server shutting down: try elsewhere
    Timeout,      // the statement or the wait for a connection took too long
    Conflict,     // a unique or foreign-key constraint refused the change
    Busy,         // serialization failure or lock contention: the transaction may be retried
    Other,        // a bug in Kiln's SQL or a server-side failure
  };
  Error(Kind k, const std::string& what) : std::runtime_error(what), kind_(k) {}
  // The database could not do it now (unreachable, too slow, or still contended after the
  // store's retries): the same request may succeed later. What the API answers with 503
  // `unavailable` and Retry-After, and what stops a persister pass early.
  [[nodiscard]] bool temporary() const {
    return kind_ == Kind::Unavailable || kind_ == Kind::Timeout || kind_ == Kind::Busy;
  }
  [[nodiscard]] Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

enum class Dialect { Sqlite, Postgres };

struct ConnectOptions {
  std::chrono::milliseconds connect_timeout{5'000};
  std::chrono::milliseconds statement_timeout{10'000};
};

class Connection {
 public:
  virtual ~Connection() = default;
  virtual Result exec(std::string_view sql, const std::vector<Value>& params = {}) = 0;
  // Starts a transaction that will write (SQLite takes the write lock at once, so two
  // writers never deadlock upgrading a read lock).
  virtual void begin_write() = 0;
  // False once the connection is known to be broken; the pool drops it.
  [[nodiscard]] virtual bool healthy() const = 0;
  [[nodiscard]] virtual Dialect dialect() const = 0;
};

// `sqlite:PATH` (a file, created when missing), or a libpq URL
// `postgresql://user:password@host:port/db?...`. Throws Error.
std::unique_ptr<Connection> connect(const std::string& url, const ConnectOptions& options);

// The URL with any password replaced by "***", for logs and errors.
std::string redact(const std::string& url);

// Which driver a URL names, or nullopt when it names none.
std::optional<Dialect> dialect_of(const std::string& url);

// `text` with every "{now}" replaced by the database's clock in ms since the Unix epoch
// (leases are timed by the database, never by a node's clock).
std::string with_now(Dialect d, std::string_view text);

// " FOR UPDATE" on PostgreSQL (the rows a SELECT returns stay locked until the transaction
// ends), "" on SQLite (whose write transaction excludes every other writer already).
inline std::string_view for_update(const Connection& c) {
  return c.dialect() == Dialect::Postgres ? " FOR UPDATE" : "";
}

}  // namespace kiln::sql
