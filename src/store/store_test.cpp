// The store conformance suite on SQLite (the embedded default), plus SQLite specifics.
#include "store/repository_conformance.hpp"
#include "store/store_conformance.hpp"

#include <filesystem>

namespace kiln::store {
namespace {

namespace fs = std::filesystem;

DatabaseOptions fresh_sqlite() {
  static const fs::path dir = [] {
    auto d = fs::temp_directory_path() / ("kiln-db-test-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  static int n = 0;
  DatabaseOptions o;
  o.url = "sqlite:" + (dir / ("t" + std::to_string(++n) + ".db")).string();
  o.pool_size = 4;
  return o;
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformance,
                         ::testing::Values(StoreFactory{"sqlite", fresh_sqlite}),
                         [](const auto& info) { return info.param.name; });

TEST(Sqlite, AStatementPastItsTimeoutIsInterrupted) {
  auto o = fresh_sqlite();
  o.connect.statement_timeout = std::chrono::milliseconds(100);
  auto c = sql::connect(o.url, o.connect);
  try {
    c->exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n");
    FAIL() << "an endless query returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::Timeout) << e.what();
  }
  EXPECT_EQ(c->exec("SELECT 41 + 1").rows.at(0).i64(0), 42);  // still usable
}

TEST(Sqlite, BadUrlsAreClearErrors) {
  DatabaseOptions bad;
  bad.url = "mysql://x";
  EXPECT_THROW(Database{bad}, Error);
  DatabaseOptions o;
  o.url = "sqlite:/nonexistent-dir/sub/kiln.db";
  Database s(o);
  try {
    s.ping();
    FAIL() << "opened a database in a missing directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), Error::Kind::Unavailable);
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/sub/kiln.db"), std::string::npos);
  }
  DatabaseOptions r;
  r.url = "sqlite:/tmp/x.db";
  r.read_urls = {"postgresql://h/db"};
  EXPECT_THROW(Database{r}, Error);  // replicas need a PostgreSQL primary
}

TEST(Redact, PasswordsNeverShow) {
  EXPECT_EQ(sql::redact("postgresql://kiln:s3cret@db:5432/kiln"),
            "postgresql://kiln:***@db:5432/kiln");
  EXPECT_EQ(sql::redact("postgresql://db/kiln?password=s3cret&sslmode=require"),
            "postgresql://db/kiln?password=***&sslmode=require");
  EXPECT_EQ(sql::redact("sqlite:/var/lib/kiln/kiln.db"), "sqlite:/var/lib/kiln/kiln.db");
  EXPECT_EQ(sql::redact("postgresql://[bad"), "postgresql://***");
}

}  // namespace
}  // namespace kiln::store
