// The assets repository: every statement on the `assets` table, the project lock that
// serialises what creates or removes an asset's bytes, and the project's storage in use.
// An asset is a completed upload's file, named and typed; deleting one is soft
// (`deleted_at`), and a project holds at most one live asset per SHA-256 (a unique index:
// a second insert of the same content fails with sql::Error{Conflict}).
//
// Each function runs on the connection it is given, inside the caller's transaction.
// Throws sql::Error.
#pragma once

#include "clients/sql/sql.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln::store {

struct Asset {
  std::string id;
  std::string project;
  std::string name;    // the file name it was uploaded as
  std::string sha256;  // "" when the upload declared none
  std::uint64_t size = 0;
  std::string content_type;  // as declared (lowercase)
  std::string key;           // the object key
  std::string upload;        // the upload that made it
  std::string created_by;
  std::int64_t created_at = 0;  // ms since the Unix epoch
  std::string detected_type;    // what its first bytes say; "" when unknown
};

namespace projects {
// Locks the project's row until the transaction ends (PostgreSQL; SQLite's write
// transaction is exclusive already). Whatever makes or removes an object key of the
// project's assets does it under this lock, so that a completion (check the bytes, record
// the asset) and a deletion (no live asset uses the key, remove the bytes) never
// interleave. Returns whether the project exists and is not deleted.
bool lock(sql::Connection& c, const std::string& project);
}  // namespace projects

namespace assets {

// A live asset of the project, or nullopt.
std::optional<Asset> find(sql::Connection& c, const std::string& project, const std::string& id);
// The same, its row locked until the transaction ends.
std::optional<Asset> lock(sql::Connection& c, const std::string& project, const std::string& id);
// Any asset by id, deleted or not (what a completed upload names).
std::optional<Asset> by_id(sql::Connection& c, const std::string& id);
// The project's live asset with these bytes, or nullopt.
std::optional<Asset> by_sha256(sql::Connection& c, const std::string& project,
                               const std::string& sha256);
// Live assets of the project with ids after `after_id`, by id, at most `limit`.
std::vector<Asset> page(sql::Connection& c, const std::string& project, const std::string& after_id,
                        std::size_t limit);
// sql::Error{Conflict} when a live asset of the project has the same SHA-256.
void insert(sql::Connection& c, const Asset& a);
void mark_deleted(sql::Connection& c, const std::string& id, std::int64_t now_ms);
// Whether a live asset (of any project) stores its bytes at `key`.
bool key_in_use(sql::Connection& c, const std::string& key);
// Bytes the project holds against its quota: live assets plus open uploads.
std::uint64_t bytes_in_use(sql::Connection& c, const std::string& project);

}  // namespace assets
}  // namespace kiln::store
