// The public JSON of uploads and assets: what the API answers (docs/api.md, openapi.yaml)
// and what `asset.*` events in the outbox carry. One shape for both.
#pragma once

#include "store/assets.hpp"
#include "store/uploads.hpp"

#include <boost/json/object.hpp>

namespace kiln::assets {

boost::json::object upload_json(const store::Upload& u);
boost::json::object asset_json(const store::Asset& a);
// An `asset.*` event's body in the outbox: the asset's JSON and its `type`.
std::string event_json(const store::Asset& a, std::string_view type);

}  // namespace kiln::assets
