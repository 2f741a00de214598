#include "store/assets.hpp"

namespace kiln::store {
namespace {

constexpr std::string_view kCols =
    "id, project_id, name, sha256, size, content_type, object_key, upload_id, created_by, "
    "created_at, detected_type";

Asset asset_of(const sql::Row& r) {
  return Asset{r.str(0), r.str(1), r.str(2), r.str(3), static_cast<std::uint64_t>(r.i64(4)),
               r.str(5), r.str(6), r.str(7), r.str(8), r.i64(9),
               r.str(10)};
}

std::optional<Asset> first(const sql::Result& res) {
  if (res.rows.empty()) return std::nullopt;
  return asset_of(res.rows[0]);
}

sql::Value or_null(const std::string& s) {
  return s.empty() ? sql::Value{} : sql::Value{s};
}

}  // namespace

namespace projects {

bool lock(sql::Connection& c, const std::string& project) {
  auto res = c.exec(
      "SELECT deleted_at FROM projects WHERE id = $1" + std::string(sql::for_update(c)), {project});
  return !res.rows.empty() && res.rows[0].null(0);
}

}  // namespace projects

namespace assets {

std::optional<Asset> find(sql::Connection& c, const std::string& project, const std::string& id) {
  return first(c.exec("SELECT " + std::string(kCols) +
                          " FROM assets WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
                      {id, project}));
}

std::optional<Asset> lock(sql::Connection& c, const std::string& project, const std::string& id) {
  return first(c.exec("SELECT " + std::string(kCols) +
                          " FROM assets WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL" +
                          std::string(sql::for_update(c)),
                      {id, project}));
}

std::optional<Asset> by_id(sql::Connection& c, const std::string& id) {
  return first(c.exec("SELECT " + std::string(kCols) + " FROM assets WHERE id = $1", {id}));
}

std::optional<Asset> by_sha256(sql::Connection& c, const std::string& project,
                               const std::string& sha256) {
  return first(
      c.exec("SELECT " + std::string(kCols) +
                 " FROM assets WHERE project_id = $1 AND sha256 = $2 AND deleted_at IS NULL",
             {project, sha256}));
}

std::vector<Asset> page(sql::Connection& c, const std::string& project, const std::string& after_id,
                        std::size_t limit) {
  std::vector<Asset> out;
  for (const auto& r : c.exec("SELECT " + std::string(kCols) +
                                  " FROM assets WHERE project_id = $1 AND deleted_at IS NULL "
                                  "AND id > $2 ORDER BY id LIMIT $3",
                              {project, after_id, static_cast<std::int64_t>(limit)})
                           .rows)
    out.push_back(asset_of(r));
  return out;
}

void insert(sql::Connection& c, const Asset& a) {
  c.exec("INSERT INTO assets (" + std::string(kCols) +
             ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
         {a.id, a.project, a.name, or_null(a.sha256), static_cast<std::int64_t>(a.size),
          a.content_type, a.key, a.upload, a.created_by, a.created_at, or_null(a.detected_type)});
}

void mark_deleted(sql::Connection& c, const std::string& id, std::int64_t now_ms) {
  c.exec("UPDATE assets SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL", {id, now_ms});
}

bool key_in_use(sql::Connection& c, const std::string& key) {
  return !c.exec("SELECT 1 FROM assets WHERE object_key = $1 AND deleted_at IS NULL", {key})
              .rows.empty();
}

std::uint64_t bytes_in_use(sql::Connection& c, const std::string& project) {
  auto res = c.exec(
      "SELECT (SELECT COALESCE(SUM(size), 0) FROM assets WHERE project_id = $1 AND deleted_at "
      "IS NULL) + (SELECT COALESCE(SUM(size), 0) FROM uploads WHERE project_id = $1 AND state = "
      "'open')",
      {project});
  return static_cast<std::uint64_t>(res.rows.at(0).i64(0));
}

}  // namespace assets
}  // namespace kiln::store
