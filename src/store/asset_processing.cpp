#include "store/asset_processing.hpp"

namespace kiln::store::asset_processing {
namespace {

constexpr const char* kColumns =
    "asset_id, pipeline, project_id, state, stage, percent, manifest_key, levels, error_code, "
    "error, updated_at";

AssetProcessing row_of(const sql::Row& r) {
  return {r.str(0), r.str(1),
          r.str(2), r.str(3),
          r.str(4), static_cast<int>(r.i64(5)),
          r.str(6), static_cast<int>(r.i64(7)),
          r.str(8), r.str(9),
          r.i64(10)};
}

sql::Value or_null(const std::string& s) {
  return s.empty() ? sql::Value{} : sql::Value{s};
}

}  // namespace

void put(sql::Connection& c, const AssetProcessing& p) {
  c.exec(std::string("INSERT INTO asset_processing (") + kColumns +
             ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
             "ON CONFLICT (asset_id, pipeline) DO UPDATE SET state = excluded.state, "
             "stage = excluded.stage, percent = excluded.percent, "
             "manifest_key = excluded.manifest_key, levels = excluded.levels, "
             "error_code = excluded.error_code, error = excluded.error, "
             "updated_at = excluded.updated_at",
         {p.asset, p.pipeline, p.project, p.state, p.stage, std::int64_t{p.percent},
          or_null(p.manifest_key), std::int64_t{p.levels}, or_null(p.error_code), or_null(p.error),
          p.updated_at});
}

std::optional<AssetProcessing> find(sql::Connection& c, const std::string& asset,
                                    const std::string& pipeline) {
  auto r = c.exec(std::string("SELECT ") + kColumns +
                      " FROM asset_processing WHERE asset_id = $1 AND pipeline = $2",
                  {asset, pipeline});
  if (r.rows.empty()) return std::nullopt;
  return row_of(r.rows.front());
}

std::vector<AssetProcessing> of_asset(sql::Connection& c, const std::string& asset) {
  std::vector<AssetProcessing> out;
  for (const auto& r : c.exec(std::string("SELECT ") + kColumns +
                                  " FROM asset_processing WHERE asset_id = $1 ORDER BY pipeline",
                              {asset})
                           .rows)
    out.push_back(row_of(r));
  return out;
}

bool requeue(sql::Connection& c, const std::string& asset, const std::string& pipeline,
             const std::string& project, std::int64_t now_ms) {
  if (c.exec("INSERT INTO asset_processing (asset_id, pipeline, project_id, state, stage, percent, "
             "levels, updated_at) VALUES ($1, $2, $3, 'queued', '', 0, 0, $4) "
             "ON CONFLICT (asset_id, pipeline) DO NOTHING",
             {asset, pipeline, project, now_ms})
          .affected > 0)
    return true;
  return c.exec(
              "UPDATE asset_processing SET state = 'queued', stage = '', percent = 0, "
              "error_code = NULL, error = NULL, updated_at = $3 "
              "WHERE asset_id = $1 AND pipeline = $2 AND state IN ('failed', 'skipped')",
              {asset, pipeline, now_ms})
             .affected > 0;
}

void remove(sql::Connection& c, const std::string& asset) {
  c.exec("DELETE FROM asset_processing WHERE asset_id = $1", {asset});
}

}  // namespace kiln::store::asset_processing
