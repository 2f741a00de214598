#include "app/database.hpp"
#include "app/settings.hpp"

#include "platform/log.hpp"

#include <cstdio>
#include <filesystem>

namespace kiln::app {

store::DatabaseOptions store_options(const config::Config& cfg) {
  store::DatabaseOptions o;
  o.url = cfg.str("database.url");
  if (o.url.empty()) {
    o.url =
        "sqlite:" +
        (std::filesystem::absolute(cfg.str("data.dir")) / "kiln.db").lexically_normal().string();
  }
  o.read_urls = config::split_list(cfg.str("database.read_urls"));
  o.pool_size = static_cast<std::size_t>(cfg.integer("database.pool_size"));
  o.pool_wait = std::chrono::milliseconds(cfg.integer("database.pool_timeout_ms"));
  o.connect.connect_timeout = std::chrono::milliseconds(cfg.integer("database.connect_timeout_ms"));
  o.connect.statement_timeout =
      std::chrono::milliseconds(cfg.integer("database.statement_timeout_ms"));
  o.read_your_writes_wait =
      std::chrono::milliseconds(cfg.integer("database.read_your_writes_wait_ms"));
  o.replica_retry = std::chrono::milliseconds(cfg.integer("database.replica_retry_ms"));
  return o;
}

std::unique_ptr<store::Database> open_store(const config::Config& cfg,
                                            metrics::Registry* registry) {
  auto options = store_options(cfg);
  auto store = std::make_unique<store::Database>(options, registry);
  const auto where = sql::redact(options.url);
  if (cfg.boolean("database.migrate_on_start")) {
    const int applied = store->migrate();
    log::info("database ready", {{"database", where},
                                 {"schema_version", store->schema_version()},
                                 {"migrations_applied", applied}});
    return store;
  }
  const int have = store->schema_version();
  if (have != store::Database::latest_schema_version()) {
    throw sql::Error(sql::Error::Kind::Other,
                     "the database at " + where + " has schema version " + std::to_string(have) +
                         ", this kiln needs " +
                         std::to_string(store::Database::latest_schema_version()) +
                         ": run `kiln migrate` (database.migrate_on_start is off)");
  }
  return store;
}

int run_migrate(const config::Config& cfg) {
  auto options = store_options(cfg);
  const auto where = sql::redact(options.url);
  try {
    if (options.url.starts_with("sqlite:")) {
      std::error_code ec;
      std::filesystem::create_directories(
          std::filesystem::path(options.url.substr(7)).parent_path(), ec);
    }
    store::Database store(options);
    const int before = store.schema_version();
    const int applied = store.migrate();
    std::printf("kiln: database %s: schema version %d -> %d (%d migrations applied)\n",
                where.c_str(), before, store.schema_version(), applied);
    return 0;
  } catch (const sql::Error& e) {
    std::fprintf(stderr, "kiln: migrate failed on %s: %s\n", where.c_str(), e.what());
    return 1;
  }
}

void add_database_settings(config::Schema& s) {
  using namespace setting;
  Setting db_url =
      text("database.url", "",
           "The database (the primary): `postgresql://user:password@host:port/db` (libpq URL; "
           "through PgBouncer in transaction mode is fine) or `sqlite:PATH`. Empty: SQLite at "
           "`<data.dir>/kiln.db`.");
  db_url.secret = true;
  db_url.default_shown = "sqlite:<data.dir>/kiln.db";
  s.add(db_url);
  Setting read_urls = text("database.read_urls", "",
                           "Comma-separated PostgreSQL replica URLs for list/get reads. Empty: "
                           "every read goes to database.url.");
  read_urls.secret = true;
  s.add(read_urls);
  s.add(integer("database.pool_size", 8, 1, 1'000,
                "Connections per database (the primary, and each replica) per process."));
  s.add(integer("database.pool_timeout_ms", 5'000, 10, 600'000,
                "How long a query waits for a free pooled connection before failing."));
  s.add(integer("database.connect_timeout_ms", 5'000, 100, 600'000,
                "Connecting to the database fails after this long."));
  s.add(integer("database.statement_timeout_ms", 10'000, 10, 3'600'000,
                "A statement running longer is cancelled (a cancel request, PgBouncer-safe) "
                "and fails."));
  s.add(integer("database.read_your_writes_wait_ms", 500, 0, 60'000,
                "A read that must see the caller's own write waits at most this long for a "
                "replica to replay it, then reads the primary."));
  s.add(integer("database.replica_retry_ms", 5'000, 100, 3'600'000,
                "A replica that failed is skipped for this long (reads go elsewhere)."));
  s.add(flag("database.migrate_on_start", true,
             "Apply pending schema migrations at start-up (safe with several nodes starting at "
             "once). Off: run `kiln migrate` yourself; a node finding an older schema refuses "
             "to start."));
}

}  // namespace kiln::app
