// A fresh PostgreSQL database for a test, on the primary of the `postgres` CTest fixture
// (tests/servers/postgres.sh), reached through PgBouncer in transaction mode; its replica
// has replayed the CREATE DATABASE before this returns. KILN_TEST_PG="<pgbouncer> <primary>
// <replica>" (host:port each), set by kiln_pg_itest.
#pragma once

#include "clients/sql/sql.hpp"
#include "platform/ids.hpp"
#include "store/database.hpp"

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>

namespace kiln::store {

struct PgEnv {
  std::string bouncer, primary, replica;  // host:port each
};

inline PgEnv env() {
  const char* v = std::getenv("KILN_TEST_PG");
  std::istringstream in(v ? v : "");
  PgEnv e;
  in >> e.bouncer >> e.primary >> e.replica;
  return e;
}

inline std::string url(const std::string& hostport, const std::string& db) {
  return "postgresql://postgres@" + hostport + "/" + db;
}

// A new database on the primary, reached through PgBouncer; its replica URL is direct.
inline DatabaseOptions fresh_pg() {
  const auto e = env();
  const std::string db = "t_" + ids::random_hex(6);
  {
    auto admin = sql::connect(url(e.primary, "postgres"), {});
    admin->exec("CREATE DATABASE " + db);
  }
  // Wait for the replica to replay the CREATE DATABASE (bounded).
  for (int i = 0; i < 200; ++i) {
    try {
      sql::connect(url(e.replica, db), {});
      break;
    } catch (const Error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  DatabaseOptions o;
  o.url = url(e.bouncer, db);
  o.pool_size = 4;
  return o;
}

}  // namespace kiln::store
