// The `events` outbox: facts written in the same transaction as the change they describe
// (`asset.uploaded`, `asset.deleted`), so that none is lost and none is told of a change
// that did not commit. The relay (jobs/relay.hpp) reads them in order, makes their jobs and
// marks them consumed.
//
// Each function runs on the connection it is given, inside the caller's transaction.
// Throws sql::Error.
#pragma once

#include "clients/sql/sql.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::store {

struct Event {
  std::string id;               // "e" + 24 hex digits
  std::string kind;             // "asset.uploaded", ...
  std::string project;          // the aggregate's project
  std::string body;             // JSON
  std::int64_t created_at = 0;  // ms since the Unix epoch
};

namespace outbox {

// Appends an event; returns it (with its new id).
Event append(sql::Connection& c, std::string kind, std::string project, std::string body,
             std::int64_t now_ms);
// Events not consumed yet, oldest first (ties by id), at most `limit`.
std::vector<Event> pending(sql::Connection& c, std::size_t limit);
// Marks the event consumed (its job exists); false when it was consumed already.
bool consume(sql::Connection& c, const std::string& id, std::int64_t now_ms);

}  // namespace outbox
}  // namespace kiln::store
