// The store conformance suite on SQLite (the embedded default), plus SQLite specifics.
#include "store/repository_conformance.hpp"
#include "store/store_conformance.hpp"
#include "store/test_sqlite.hpp"

namespace kiln::store {
namespace {

DatabaseOptions fresh_sqlite() {
  auto o = test::temp_sqlite("store");
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
