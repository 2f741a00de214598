// For tests and fuzzers only: a reference model of the scene, written to be obviously
// correct rather than fast. It states the rules of docs/protocol.md ("Operations") directly:
// a batch is applied to a copy, op by op, and the copy replaces the state only if every op
// was accepted. There is no child index, no undo log, no incremental bookkeeping: order and
// subtrees are recomputed from parent links each time. Scene (the real one) must agree with
// it on every batch: the same code for a refused batch, the same snapshot after an accepted
// one, the same sibling order.
#pragma once

#include "collab/errors.hpp"
#include "collab/ops.hpp"

#include <boost/json/object.hpp>

#include <algorithm>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kiln::collab::model {

struct Entity {
  std::string parent;
  std::string index;
  boost::json::object props;
};

class SceneModel {
 public:
  explicit SceneModel(std::size_t max_entities) : max_entities_(max_entities) {}

  // The code the batch ends with: Ok (applied) or the first refused op's code (unchanged).
  Code apply(const std::vector<Op>& batch) {
    auto next = entities_;
    for (const auto& op : batch) {
      if (auto c = apply_one(next, op); c != Code::Ok) return c;
    }
    entities_ = std::move(next);
    return Code::Ok;
  }

  // The same shape as Scene::snapshot().
  [[nodiscard]] boost::json::object snapshot() const {
    boost::json::object ents;
    for (const auto& [id, e] : entities_) {
      boost::json::object o;
      o["parent"] = e.parent;
      o["index"] = e.index;
      o["props"] = e.props;
      ents.emplace(id, std::move(o));
    }
    boost::json::object out;
    out["entities"] = std::move(ents);
    return out;
  }

  // Children of `parent` ordered by (index, id).
  [[nodiscard]] std::vector<std::string> children(const std::string& parent) const {
    std::vector<std::pair<std::string, std::string>> kids;
    for (const auto& [id, e] : entities_) {
      if (e.parent == parent) kids.emplace_back(e.index, id);
    }
    std::sort(kids.begin(), kids.end());
    std::vector<std::string> out;
    for (auto& k : kids) out.push_back(std::move(k.second));
    return out;
  }

  [[nodiscard]] bool contains(const std::string& id) const {
    return id == std::string(kRoot) || entities_.count(id) != 0;
  }
  [[nodiscard]] const std::map<std::string, Entity>& entities() const { return entities_; }

 private:
  using Map = std::map<std::string, Entity>;

  static bool exists(const Map& m, const std::string& id) {
    return id == std::string(kRoot) || m.count(id) != 0;
  }

  // True when `ancestor` is `id` or one of the entities on its path to root.
  static bool on_path_to_root(const Map& m, std::string id, const std::string& ancestor) {
    for (std::size_t steps = 0; steps <= m.size() + 1; ++steps) {
      if (id == ancestor) return true;
      if (id == std::string(kRoot)) return false;
      id = m.at(id).parent;
    }
    return true;  // unreachable on a tree; a cycle counts as "inside"
  }

  Code apply_one(Map& m, const Op& op) const {
    const std::string root(kRoot);
    switch (op.kind) {
      case Op::Kind::Create:
        if (exists(m, op.entity)) return Code::Exists;
        if (!exists(m, op.parent)) return Code::NotFound;
        if (m.size() >= max_entities_) return Code::TooLarge;
        m[op.entity] = Entity{op.parent, op.index.value_or(""), op.props};
        return Code::Ok;
      case Op::Kind::Set:
        if (op.entity == root) return Code::Invalid;
        if (!m.count(op.entity)) return Code::NotFound;
        if (op.value.is_null()) {
          m[op.entity].props.erase(op.key);
        } else {
          m[op.entity].props[op.key] = op.value;
        }
        return Code::Ok;
      case Op::Kind::Move:
        if (op.entity == root) return Code::Invalid;
        if (!m.count(op.entity)) return Code::NotFound;
        if (!exists(m, op.parent)) return Code::NotFound;
        if (on_path_to_root(m, op.parent, op.entity)) return Code::Cycle;
        m[op.entity].parent = op.parent;
        if (op.index) m[op.entity].index = *op.index;
        return Code::Ok;
      case Op::Kind::Delete: {
        if (op.entity == root) return Code::Invalid;
        if (!m.count(op.entity)) return Code::NotFound;
        // Everything whose path to root passes through the entity goes with it.
        std::vector<std::string> doomed;
        for (const auto& [id, e] : m) {
          if (on_path_to_root(m, id, op.entity)) doomed.push_back(id);
        }
        for (const auto& id : doomed) m.erase(id);
        return Code::Ok;
      }
    }
    return Code::Invalid;
  }

  std::size_t max_entities_;
  Map entities_;
};

}  // namespace kiln::collab::model
