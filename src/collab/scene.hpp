// A scene: a tree of entities under `root`, each with a parent, an order key and
// properties. Pure data and rules; no I/O, no clocks, no threads.
//
// Batches are atomic: apply() either applies every op or, at the first rejected op,
// undoes what the batch had done and reports why.
#pragma once

#include "collab/errors.hpp"
#include "collab/ops.hpp"

#include <boost/json/object.hpp>

#include <cstddef>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kiln::collab {

struct Entity {
  std::string parent;
  std::string index;
  boost::json::object props;
};

class Scene {
 public:
  // max_entities: a create beyond it is refused with `too_large`.
  explicit Scene(std::size_t max_entities = 100'000) : max_entities_(max_entities) {}

  // Applies the batch atomically. On error, `failed_op` (when given) is the index of the
  // op that was refused and the scene is exactly as before the call.
  Error apply(const std::vector<Op>& batch, std::size_t* failed_op = nullptr);

  // Checks the batch against the scene without changing it (applies, then undoes).
  Error validate(const std::vector<Op>& batch);

  // Checks batches that would be applied one after another: each against the scene as the
  // earlier accepted ones (not the refused ones) would leave it. One result per batch, in
  // order; the scene is unchanged afterwards. What a node does before appending a queue of
  // batches in one step.
  std::vector<Error> validate_sequence(const std::vector<const std::vector<Op>*>& batches);

  // Changes the limit for later creates (a replay of batches accepted under another limit
  // lifts it, then restores it).
  void set_max_entities(std::size_t max_entities) { max_entities_ = max_entities; }

  [[nodiscard]] bool contains(std::string_view id) const;
  [[nodiscard]] const Entity* find(std::string_view id) const;
  [[nodiscard]] std::size_t size() const { return entities_.size(); }
  // Children of `parent` in order (index, then id).
  [[nodiscard]] std::vector<std::string> children(std::string_view parent) const;

  // {"entities":{ID:{"parent":P,"index":S,"props":{...}}}}, root omitted.
  [[nodiscard]] boost::json::object snapshot() const;
  // Rebuilds a scene from snapshot(); refuses a snapshot that breaks the tree's rules.
  static Error from_snapshot(const boost::json::value& snap, Scene& out);

  // For tests: every entity reaches root through existing parents, with no cycle, and the
  // child index matches the entities. Returns a description of the first violation.
  [[nodiscard]] std::string check_invariants() const;

 private:
  struct Undo;
  using Key = std::pair<std::string, std::string>;  // (index, id): sibling order

  Error apply_one(const Op& op, std::vector<Undo>& undo);
  void rollback(std::vector<Undo>& undo);
  void link(const std::string& id, const Entity& e);
  void unlink(const std::string& id, const Entity& e);
  bool is_self_or_ancestor(std::string_view candidate, std::string_view of) const;

  std::size_t max_entities_;
  std::unordered_map<std::string, Entity> entities_;
  std::unordered_map<std::string, std::set<Key>> children_;
};

}  // namespace kiln::collab
