#include "clients/sql/sql.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <chrono>
#include <cstring>

namespace kiln::sql {
namespace {

using Clock = std::chrono::steady_clock;

// Type OIDs (pg_type.dat) that Kiln reads as numbers.
constexpr Oid kBool = 16, kInt8 = 20, kInt2 = 21, kInt4 = 23, kFloat4 = 700, kFloat8 = 701;

Error::Kind kind_of_state(const char* sqlstate) {
  const std::string s = sqlstate ? sqlstate : "";
  if (s == "23505" || s == "23503" || s == "23514" || s == "23502") return Error::Kind::Conflict;
  if (s == "40001" || s == "40P01" || s == "55P03") return Error::Kind::Busy;
  if (s == "57014") return Error::Kind::Timeout;  // query_canceled
  // 08: connection exceptions; 57P: operator intervention (shutdown); 53: resources.
  if (s.starts_with("08") || s.starts_with("57P") || s.starts_with("53"))
    return Error::Kind::Unavailable;
  return Error::Kind::Other;
}

class PgConnection final : public Connection {
 public:
  PgConnection(const std::string& url, const ConnectOptions& o) : options_(o) {
    const std::string timeout =
        std::to_string(std::max<std::int64_t>(1, (o.connect_timeout.count() + 999) / 1000));
    const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
    const char* values[] = {url.c_str(), timeout.c_str(), "kiln", nullptr};
    conn_ = PQconnectdbParams(keys, values, 1);
    if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
      std::string why = conn_ ? PQerrorMessage(conn_) : "out of memory";
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      PQfinish(conn_);
      conn_ = nullptr;
      throw Error(Error::Kind::Unavailable,
                  "cannot connect to PostgreSQL at " + redact(url) + ": " + why);
    }
    // Server notices ("relation already exists, skipping") are not errors: keep them off
    // stderr, which is the operator's log.
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
  }

  ~PgConnection() override { PQfinish(conn_); }

  // Sends with unnamed statements only (PgBouncer's transaction mode forbids named ones)
  // and waits at most statement_timeout; past it, the server is asked to cancel.
  Result exec(std::string_view sql, const std::vector<Value>& params) override {
    if (!healthy()) throw Error(Error::Kind::Unavailable, "PostgreSQL connection is broken");
    std::vector<std::string> text(params.size());
    std::vector<const char*> ptrs(params.size(), nullptr);
    for (std::size_t i = 0; i < params.size(); ++i) {
      const auto& v = params[i];
      if (std::holds_alternative<Null>(v)) continue;
      if (const auto* n = std::get_if<std::int64_t>(&v)) {
        text[i] = std::to_string(*n);
      } else if (const auto* d = std::get_if<double>(&v)) {
        text[i] = std::to_string(*d);
      } else {
        text[i] = std::get<std::string>(v);
      }
      ptrs[i] = text[i].c_str();
    }
    const std::string q(sql);
    const bool sent = params.empty()
                          ? PQsendQuery(conn_, q.c_str()) == 1
                          : PQsendQueryParams(conn_, q.c_str(), static_cast<int>(params.size()),
                                              nullptr, ptrs.data(), nullptr, nullptr, 0) == 1;
    if (!sent) lost("sending a query");
    wait_for_result();
    Result out;
    std::optional<Error> failure;
    while (PGresult* res = PQgetResult(conn_)) {
      const auto st = PQresultStatus(res);
      if (st == PGRES_TUPLES_OK) {
        read_rows(res, out);
      } else if (st == PGRES_COMMAND_OK) {
        const char* n = PQcmdTuples(res);
        if (n && *n) out.affected = std::atoll(n);
      } else if (!failure) {
        std::string why = PQresultErrorMessage(res);
        while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
        failure.emplace(kind_of_state(PQresultErrorField(res, PG_DIAG_SQLSTATE)),
                        "PostgreSQL: " + why);
      }
      PQclear(res);
    }
    if (PQstatus(conn_) != CONNECTION_OK) broken_ = true;
    if (failure) {
      if (broken_ && failure->kind() == Error::Kind::Other)
        throw Error(Error::Kind::Unavailable, failure->what());
      throw *failure;
    }
    return out;
  }

  void begin_write() override { exec("BEGIN", {}); }
  [[nodiscard]] bool healthy() const override {
    return conn_ != nullptr && !broken_ && PQstatus(conn_) == CONNECTION_OK;
  }
  [[nodiscard]] Dialect dialect() const override { return Dialect::Postgres; }

 private:
  [[noreturn]] void lost(const char* doing) {
    broken_ = true;
    std::string why = PQerrorMessage(conn_);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    throw Error(Error::Kind::Unavailable,
                std::string("PostgreSQL connection lost while ") + doing + ": " + why);
  }

  void wait_for_result() {
    const auto deadline = Clock::now() + options_.statement_timeout;
    bool cancelled = false;
    for (;;) {
      if (PQconsumeInput(conn_) != 1) lost("reading a result");
      if (PQisBusy(conn_) == 0) {
        if (cancelled) {
          // Drain the cancelled statement's result; the caller gets a timeout either way.
          while (PGresult* r = PQgetResult(conn_)) PQclear(r);
          throw Error(Error::Kind::Timeout, "PostgreSQL statement exceeded " +
                                                std::to_string(options_.statement_timeout.count()) +
                                                " ms (database.statement_timeout_ms)");
        }
        return;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        if (cancelled) {
          // The server did not answer the cancel either: give the connection up.
          broken_ = true;
          throw Error(Error::Kind::Timeout, "PostgreSQL did not answer a cancel request");
        }
        if (PGcancel* c = PQgetCancel(conn_)) {
          char err[256];
          PQcancel(c, err, sizeof err);
          PQfreeCancel(c);
        }
        cancelled = true;
        left = std::chrono::milliseconds(options_.connect_timeout);
      }
      pollfd p{PQsocket(conn_), POLLIN, 0};
      const int rc = ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), 1000)));
      if (rc < 0 && errno != EINTR) lost("waiting for a result");
    }
  }

  static void read_rows(PGresult* res, Result& out) {
    const int rows = PQntuples(res);
    const int cols = PQnfields(res);
    out.rows.reserve(out.rows.size() + static_cast<std::size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      Row row;
      row.cols.reserve(static_cast<std::size_t>(cols));
      for (int c = 0; c < cols; ++c) {
        if (PQgetisnull(res, r, c)) {
          row.cols.emplace_back(Null{});
          continue;
        }
        const char* v = PQgetvalue(res, r, c);
        switch (PQftype(res, c)) {
          case kInt8:
          case kInt4:
          case kInt2:
            row.cols.emplace_back(std::int64_t{std::atoll(v)});
            break;
          case kBool:
            row.cols.emplace_back(std::int64_t{v[0] == 't' ? 1 : 0});
            break;
          case kFloat4:
          case kFloat8:
            row.cols.emplace_back(std::strtod(v, nullptr));
            break;
          default:
            row.cols.emplace_back(std::string(v, static_cast<std::size_t>(PQgetlength(res, r, c))));
        }
      }
      out.rows.push_back(std::move(row));
    }
  }

  ConnectOptions options_;
  PGconn* conn_ = nullptr;
  bool broken_ = false;
};

}  // namespace

std::unique_ptr<Connection> connect_postgres(const std::string& url, const ConnectOptions& o) {
  return std::make_unique<PgConnection>(url, o);
}

}  // namespace kiln::sql
