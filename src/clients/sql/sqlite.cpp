#include "clients/sql/sql.hpp"

#include <sqlite3.h>

#include <chrono>
#include <unordered_map>

namespace kiln::sql {
namespace {

using Clock = std::chrono::steady_clock;

class SqliteConnection final : public Connection {
 public:
  SqliteConnection(const std::string& path, const ConnectOptions& o) : options_(o) {
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) != SQLITE_OK) {
      std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
      sqlite3_close(db_);
      db_ = nullptr;
      throw Error(Error::Kind::Unavailable, "cannot open SQLite database " + path + ": " + why);
    }
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, static_cast<int>(o.statement_timeout.count()));
    // A statement that runs past its deadline is interrupted (checked every 10k VM steps).
    sqlite3_progress_handler(
        db_, 10'000,
        [](void* self) -> int {
          auto* c = static_cast<SqliteConnection*>(self);
          return c->deadline_ && Clock::now() > *c->deadline_ ? 1 : 0;
        },
        this);
    exec("PRAGMA journal_mode=WAL", {});
    // FULL: a commit is on disk when it returns (NORMAL could lose the latest commits in a
    // power loss). The journal of `kiln serve` deletes a segment once the snapshots that
    // cover it are committed, so those commits must be as durable as the journal's fsyncs.
    exec("PRAGMA synchronous=FULL", {});
    exec("PRAGMA foreign_keys=ON", {});
  }

  ~SqliteConnection() override {
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }

  Result exec(std::string_view sql, const std::vector<Value>& params) override {
    sqlite3_stmt* stmt = prepare(sql);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const std::string name = "$" + std::to_string(i + 1);
      const int idx = sqlite3_bind_parameter_index(stmt, name.c_str());
      if (idx == 0) continue;  // a parameter the statement does not use
      const auto& v = params[i];
      int rc = SQLITE_OK;
      if (std::holds_alternative<Null>(v)) {
        rc = sqlite3_bind_null(stmt, idx);
      } else if (const auto* n = std::get_if<std::int64_t>(&v)) {
        rc = sqlite3_bind_int64(stmt, idx, *n);
      } else if (const auto* d = std::get_if<double>(&v)) {
        rc = sqlite3_bind_double(stmt, idx, *d);
      } else {
        const auto& s = std::get<std::string>(v);
        rc = sqlite3_bind_text64(stmt, idx, s.data(), s.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
      }
      if (rc != SQLITE_OK) fail(rc, sql);
    }
    deadline_ = Clock::now() + options_.statement_timeout;
    Result out;
    for (;;) {
      const int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) {
        deadline_.reset();
        sqlite3_reset(stmt);
        fail(rc, sql);
      }
      Row row;
      const int n = sqlite3_column_count(stmt);
      row.cols.reserve(static_cast<std::size_t>(n));
      for (int c = 0; c < n; ++c) {
        switch (sqlite3_column_type(stmt, c)) {
          case SQLITE_NULL:
            row.cols.emplace_back(Null{});
            break;
          case SQLITE_INTEGER:
            row.cols.emplace_back(std::int64_t{sqlite3_column_int64(stmt, c)});
            break;
          case SQLITE_FLOAT:
            row.cols.emplace_back(sqlite3_column_double(stmt, c));
            break;
          default: {
            const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
            row.cols.emplace_back(
                std::string(p ? p : "", static_cast<std::size_t>(sqlite3_column_bytes(stmt, c))));
          }
        }
      }
      out.rows.push_back(std::move(row));
    }
    deadline_.reset();
    out.affected = sqlite3_changes64(db_);
    sqlite3_reset(stmt);
    return out;
  }

  void begin_write() override { exec("BEGIN IMMEDIATE", {}); }
  [[nodiscard]] bool healthy() const override { return db_ != nullptr; }
  [[nodiscard]] Dialect dialect() const override { return Dialect::Sqlite; }

 private:
  sqlite3_stmt* prepare(std::string_view sql) {
    std::string key(sql);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
    sqlite3_stmt* stmt = nullptr;
    const char* tail = nullptr;
    const int rc = sqlite3_prepare_v3(db_, key.c_str(), static_cast<int>(key.size()),
                                      SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
    if (rc != SQLITE_OK) fail(rc, sql);
    if (tail != nullptr && *tail != '\0') {
      // Several statements in one string: run them one by one (migrations), uncached.
      sqlite3_finalize(stmt);
      char* err = nullptr;
      if (sqlite3_exec(db_, key.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
        std::string why = err ? err : "error";
        sqlite3_free(err);
        throw Error(Error::Kind::Other, "SQLite: " + why);
      }
      return prepare("SELECT 0 WHERE 0");
    }
    cache_.emplace(std::move(key), stmt);
    return stmt;
  }

  [[noreturn]] void fail(int rc, std::string_view sql) {
    const std::string why = std::string("SQLite: ") + sqlite3_errmsg(db_) +
                            " (in: " + std::string(sql.substr(0, 80)) + ")";
    switch (rc & 0xff) {
      case SQLITE_CONSTRAINT:
        throw Error(Error::Kind::Conflict, why);
      case SQLITE_BUSY:
        // The busy handler already waited statement_timeout for the lock: retrying would
        // wait as long again. Another process (or a long transaction) holds the database.
        throw Error(Error::Kind::Timeout, why + ": locked for longer than the statement timeout");
      case SQLITE_LOCKED:
        throw Error(Error::Kind::Busy, why);
      case SQLITE_INTERRUPT:
        throw Error(Error::Kind::Timeout, why);
      case SQLITE_CANTOPEN:
      case SQLITE_IOERR:
      case SQLITE_FULL:
      case SQLITE_READONLY:
        throw Error(Error::Kind::Unavailable, why);
      default:
        throw Error(Error::Kind::Other, why);
    }
  }

  ConnectOptions options_;
  sqlite3* db_ = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
  std::optional<Clock::time_point> deadline_;
};

}  // namespace

std::unique_ptr<Connection> connect_sqlite(const std::string& path, const ConnectOptions& o) {
  return std::make_unique<SqliteConnection>(path, o);
}

}  // namespace kiln::sql
