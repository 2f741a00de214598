// The `asset_processing` table: what the asset pipeline made of an asset, one row per
// (asset, pipeline version). `ready` rows name the manifest's object key; `failed` rows
// the reason (a code of assets/pipeline/model.hpp's Errc and a sentence); `skipped`: the
// asset is not a kind the pipeline makes levels of.
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

struct AssetProcessing {
  std::string asset;
  std::string pipeline;  // "kiln-lod/1"
  std::string project;
  std::string state;            // queued, processing, ready, failed, skipped
  std::string stage;            // import, lod, write, store (while processing)
  int percent = 0;              // 0-100
  std::string manifest_key;     // ready: the manifest's object key
  int levels = 0;               // ready: how many levels
  std::string error_code;       // failed
  std::string error;            // failed: the sentence a user reads
  std::int64_t updated_at = 0;  // ms since the Unix epoch
};

namespace asset_processing {

// Inserts or replaces the row of (asset, pipeline).
void put(sql::Connection& c, const AssetProcessing& p);
std::optional<AssetProcessing> find(sql::Connection& c, const std::string& asset,
                                    const std::string& pipeline);
// Every pipeline version's row of the asset (the deleted asset's derived files).
std::vector<AssetProcessing> of_asset(sql::Connection& c, const std::string& asset);
void remove(sql::Connection& c, const std::string& asset);
// Queues (asset, pipeline) for one more run, atomically: true when this call did (no row, or
// a failed or skipped one); false when it is queued, processing or ready already, so that
// requests at once start one run.
bool requeue(sql::Connection& c, const std::string& asset, const std::string& pipeline,
             const std::string& project, std::int64_t now_ms);

}  // namespace asset_processing
}  // namespace kiln::store
