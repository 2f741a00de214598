#include "store/uploads.hpp"

#include <stdexcept>

namespace kiln::store {
namespace {

constexpr std::string_view kCols =
    "id, project_id, user_id, filename, size, content_type, sha256, object_key, multipart_id, "
    "part_size, state, asset_id, error, created_at, updated_at";

UploadState state_of(const std::string& s) {
  if (s == "open") return UploadState::Open;
  if (s == "completed") return UploadState::Completed;
  if (s == "aborted") return UploadState::Aborted;
  throw sql::Error(sql::Error::Kind::Other, "uploads.state holds '" + s + "'");
}

Upload upload_of(const sql::Row& r) {
  Upload u;
  u.id = r.str(0);
  u.project = r.str(1);
  u.user = r.str(2);
  u.filename = r.str(3);
  u.size = static_cast<std::uint64_t>(r.i64(4));
  u.content_type = r.str(5);
  u.sha256 = r.str(6);
  u.key = r.str(7);
  u.multipart_id = r.str(8);
  u.part_size = static_cast<std::uint64_t>(r.i64(9));
  u.state = state_of(r.str(10));
  u.asset_id = r.str(11);
  u.error = r.str(12);
  u.created_at = r.i64(13);
  u.updated_at = r.i64(14);
  return u;
}

sql::Value or_null(const std::string& s) {
  return s.empty() ? sql::Value{} : sql::Value{s};
}

std::optional<Upload> first(const sql::Result& res) {
  if (res.rows.empty()) return std::nullopt;
  return upload_of(res.rows[0]);
}

}  // namespace

std::string_view to_string(UploadState s) {
  switch (s) {
    case UploadState::Open:
      return "open";
    case UploadState::Completed:
      return "completed";
    case UploadState::Aborted:
      return "aborted";
  }
  return "open";
}

namespace uploads {

std::optional<Upload> find(sql::Connection& c, const std::string& project, const std::string& id) {
  return first(
      c.exec("SELECT " + std::string(kCols) + " FROM uploads WHERE id = $1 AND project_id = $2",
             {id, project}));
}

std::optional<std::string> project_of(sql::Connection& c, const std::string& id) {
  auto res = c.exec("SELECT project_id FROM uploads WHERE id = $1", {id});
  if (res.rows.empty()) return std::nullopt;
  return res.rows[0].str(0);
}

std::optional<Upload> lock(sql::Connection& c, const std::string& id) {
  return first(c.exec("SELECT " + std::string(kCols) + " FROM uploads WHERE id = $1" +
                          std::string(sql::for_update(c)),
                      {id}));
}

void insert(sql::Connection& c, const Upload& u) {
  c.exec("INSERT INTO uploads (" + std::string(kCols) +
             ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
         {u.id, u.project, u.user, u.filename, static_cast<std::int64_t>(u.size), u.content_type,
          or_null(u.sha256), u.key, or_null(u.multipart_id),
          u.part_size > 0 ? sql::Value{static_cast<std::int64_t>(u.part_size)} : sql::Value{},
          std::string(to_string(u.state)), or_null(u.asset_id), or_null(u.error), u.created_at,
          u.updated_at});
}

bool abort(sql::Connection& c, const std::string& id, const std::string& reason,
           std::int64_t now_ms) {
  return c.exec(
              "UPDATE uploads SET state = 'aborted', error = $2, updated_at = $3 "
              "WHERE id = $1 AND state = 'open'",
              {id, reason, now_ms})
             .affected == 1;
}

void complete(sql::Connection& c, const std::string& id, const std::string& asset_id,
              std::int64_t now_ms) {
  c.exec(
      "UPDATE uploads SET state = 'completed', asset_id = $2, updated_at = $3 "
      "WHERE id = $1 AND state = 'open'",
      {id, asset_id, now_ms});
}

void touch(sql::Connection& c, const std::string& id, std::int64_t now_ms) {
  c.exec("UPDATE uploads SET updated_at = $2 WHERE id = $1 AND state = 'open'", {id, now_ms});
}

std::vector<Upload> stale(sql::Connection& c, std::int64_t idle_since_ms, std::size_t limit) {
  std::vector<Upload> out;
  for (const auto& r : c.exec("SELECT " + std::string(kCols) +
                                  " FROM uploads WHERE state = 'open' AND updated_at < $1 "
                                  "ORDER BY updated_at, id LIMIT $2",
                              {idle_since_ms, static_cast<std::int64_t>(limit)})
                           .rows)
    out.push_back(upload_of(r));
  return out;
}

}  // namespace uploads
}  // namespace kiln::store
