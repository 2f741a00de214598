// The uploads repository: every statement on the `uploads` table. An upload is a file on
// its way to object storage (docs/uploads.md): `open` until it is completed (it then names
// its asset) or aborted (by request, a failed check, or the stale sweep; `error` says why).
//
// Each function runs on the connection it is given, inside the caller's transaction
// (store::Database::write or read), so that several repositories change rows in one unit
// of work. Throws sql::Error (its kind says whether retrying may help).
#pragma once

#include "clients/sql/sql.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::store {

enum class UploadState { Open, Completed, Aborted };

// "open", "completed", "aborted": the column's values, and what the API shows.
std::string_view to_string(UploadState s);

struct Upload {
  std::string id;
  std::string project;
  std::string user;  // the creator; "service" for the service key
  std::string filename;
  std::uint64_t size = 0;  // bytes declared at creation
  std::string content_type;
  std::string sha256;           // 64 lowercase hex digits, or "" when not declared
  std::string key;              // the object key in the uploads bucket
  std::string multipart_id;     // the S3 UploadId; "" for a single PUT
  std::uint64_t part_size = 0;  // bytes per part (the last may be shorter); 0: any size
  UploadState state = UploadState::Open;
  std::string asset_id;         // when completed
  std::string error;            // when aborted: why
  std::int64_t created_at = 0;  // ms since the Unix epoch
  std::int64_t updated_at = 0;  // ms; the stale sweep reads it

  [[nodiscard]] bool multipart() const { return !multipart_id.empty(); }
};

namespace uploads {

// The upload with this id in this project, or nullopt.
std::optional<Upload> find(sql::Connection& c, const std::string& project, const std::string& id);
// The project an upload belongs to, or nullopt (Uppy's routes name the upload alone).
std::optional<std::string> project_of(sql::Connection& c, const std::string& id);
// The upload, its row locked until the transaction ends (PostgreSQL; SQLite's write
// transaction is exclusive already), or nullopt.
std::optional<Upload> lock(sql::Connection& c, const std::string& id);
void insert(sql::Connection& c, const Upload& u);
// open -> aborted with `reason`. False when the upload was not open: whoever changed it
// first (another API node's sweep, a completion) keeps it.
bool abort(sql::Connection& c, const std::string& id, const std::string& reason,
           std::int64_t now_ms);
// open -> completed, naming the asset.
void complete(sql::Connection& c, const std::string& id, const std::string& asset_id,
              std::int64_t now_ms);
// Records activity on an open upload (it is not stale while used).
void touch(sql::Connection& c, const std::string& id, std::int64_t now_ms);
// Open uploads with no activity since `idle_since_ms`, oldest first, at most `limit`.
std::vector<Upload> stale(sql::Connection& c, std::int64_t idle_since_ms, std::size_t limit);

}  // namespace uploads
}  // namespace kiln::store
