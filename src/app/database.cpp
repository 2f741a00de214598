#include "app/database.hpp"

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

}  // namespace kiln::app
