// The database as configured (database.*): options, opening with the schema checked or
// migrated, and `kiln migrate`.
#pragma once

#include "platform/config.hpp"
#include "store/database.hpp"

#include <memory>

namespace kiln::metrics {
class Registry;
}

namespace kiln::app {

// database.url, or SQLite in the data directory when it is empty.
store::DatabaseOptions store_options(const config::Config& cfg);

// Opens the store and applies pending migrations (database.migrate_on_start) or checks
// that the schema is current. Throws sql::Error with a message for the operator.
std::unique_ptr<store::Database> open_store(const config::Config& cfg, metrics::Registry* registry);

// `kiln migrate`: applies pending migrations and reports. Returns the exit code.
int run_migrate(const config::Config& cfg);

}  // namespace kiln::app
