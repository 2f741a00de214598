// Entities that show assets, from a scene's snapshot (docs/protocol.md, "Entities that show
// assets"): an entity whose props hold `asset` (an asset id of the scene's project) shows
// that asset, placed by its props `position` ([x, y, z], default 0), `rotation` (a unit
// quaternion [x, y, z, w], glTF's order, default identity) and `scale` ([x, y, z] or one
// number, default 1), composed along its parents (world = parent's world * T * R * S, as
// glTF nodes). Pure: values in, values out.
#pragma once

#include "assets/transform.hpp"

#include <boost/json/object.hpp>

#include <array>
#include <string>
#include <vector>

namespace kiln::assets {

struct PlacedEntity {
  std::string id;
  std::string asset;
  Matrix world{};
  double max_scale = 1;  // the largest axis scale of `world` (a bounding radius grows by it)
};

struct SkippedEntity {
  std::string id;
  std::string why;  // e.g. "props.position is not an array of 3 finite numbers"
};

struct ScenePlacement {
  std::vector<PlacedEntity> entities;  // by id
  std::vector<SkippedEntity> skipped;  // name an asset but cannot be placed; by id
};

// `snapshot`: {"entities": {id: {"parent", "index", "props"}}} (the scene's snapshot). An
// entity with a malformed transform, or under one, is skipped with the reason.
ScenePlacement place_entities(const boost::json::object& snapshot);

// A model-space sphere through `world`: the center transformed, the radius times the
// largest axis scale.
std::array<double, 4> world_sphere(const Matrix& world, double max_scale,
                                   const std::array<double, 3>& center, double radius);

}  // namespace kiln::assets
