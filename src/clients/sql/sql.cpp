#include "clients/sql/sql.hpp"

#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

namespace kiln::sql {

std::unique_ptr<Connection> connect_sqlite(const std::string& path, const ConnectOptions& o);
std::unique_ptr<Connection> connect_postgres(const std::string& url, const ConnectOptions& o);

std::int64_t Row::i64(std::size_t i) const {
  const auto& v = cols.at(i);
  if (const auto* n = std::get_if<std::int64_t>(&v)) return *n;
  if (const auto* d = std::get_if<double>(&v)) return static_cast<std::int64_t>(*d);
  if (const auto* s = std::get_if<std::string>(&v)) return std::atoll(s->c_str());
  return 0;
}

std::string Row::str(std::size_t i) const {
  const auto& v = cols.at(i);
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* n = std::get_if<std::int64_t>(&v)) return std::to_string(*n);
  if (const auto* d = std::get_if<double>(&v)) return std::to_string(*d);
  return {};
}

std::optional<Dialect> dialect_of(const std::string& url) {
  if (url.starts_with("sqlite:")) return Dialect::Sqlite;
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) return Dialect::Postgres;
  return std::nullopt;
}

std::string redact(const std::string& url) {
  if (!url.starts_with("postgres")) return url;
  auto u = boost::urls::parse_uri(url);
  if (!u) return "postgresql://***";  // unparsable: show nothing that might be a secret
  boost::urls::url copy = *u;
  if (copy.has_password()) copy.set_password("***");
  auto params = copy.params();
  if (params.find("password") != params.end()) params.set("password", "***");
  return std::string(copy.buffer());
}

std::unique_ptr<Connection> connect(const std::string& url, const ConnectOptions& options) {
  switch (dialect_of(url).value_or(Dialect::Sqlite)) {
    case Dialect::Sqlite:
      if (!url.starts_with("sqlite:"))
        throw Error(Error::Kind::Other, "database URL '" + redact(url) +
                                            "' names no driver (sqlite:PATH or postgresql://...)");
      return connect_sqlite(url.substr(7), options);
    case Dialect::Postgres:
      return connect_postgres(url, options);
  }
  return nullptr;
}

std::string with_now(Dialect d, std::string_view text) {
  static constexpr std::string_view kNow = "{now}";
  const std::string_view now = d == Dialect::Postgres
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

}  // namespace kiln::sql
