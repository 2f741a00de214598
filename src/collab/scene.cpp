#include "collab/scene.hpp"

#include <algorithm>
#include <iterator>
#include <variant>

namespace kiln::collab {

struct Scene::Undo {
  struct Created {
    std::string id;
  };
  struct PropSet {
    std::string id;
    std::string key;
    std::optional<boost::json::value> old;
  };
  struct Moved {
    std::string id;
    std::string parent;
    std::string index;
  };
  struct Deleted {
    std::vector<std::pair<std::string, Entity>> removed;  // parents before children
  };
  std::variant<Created, PropSet, Moved, Deleted> what;
};

Error Scene::validate(const std::vector<Op>& batch) {
  std::vector<Undo> undo;
  undo.reserve(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (auto e = apply_one(batch[i], undo)) {
      rollback(undo);
      e.message = "op " + std::to_string(i) + ": " + e.message;
      return e;
    }
  }
  rollback(undo);
  return {};
}

std::vector<Error> Scene::validate_sequence(const std::vector<const std::vector<Op>*>& batches) {
  std::vector<Error> out(batches.size());
  std::vector<Undo> accepted;  // every accepted batch's undo, oldest first
  for (std::size_t b = 0; b < batches.size(); ++b) {
    std::vector<Undo> undo;
    undo.reserve(batches[b]->size());
    for (std::size_t i = 0; i < batches[b]->size(); ++i) {
      if (auto e = apply_one((*batches[b])[i], undo)) {
        rollback(undo);
        e.message = "op " + std::to_string(i) + ": " + e.message;
        out[b] = std::move(e);
        break;
      }
    }
    if (!out[b]) std::move(undo.begin(), undo.end(), std::back_inserter(accepted));
  }
  rollback(accepted);
  return out;
}

bool Scene::contains(std::string_view id) const {
  return id == kRoot || entities_.count(std::string(id)) != 0;
}

const Entity* Scene::find(std::string_view id) const {
  auto it = entities_.find(std::string(id));
  return it == entities_.end() ? nullptr : &it->second;
}

std::vector<std::string> Scene::children(std::string_view parent) const {
  std::vector<std::string> out;
  auto it = children_.find(std::string(parent));
  if (it == children_.end()) return out;
  for (const auto& [index, id] : it->second) out.push_back(id);
  return out;
}

void Scene::link(const std::string& id, const Entity& e) {
  children_[e.parent].emplace(e.index, id);
}

void Scene::unlink(const std::string& id, const Entity& e) {
  auto it = children_.find(e.parent);
  if (it == children_.end()) return;
  it->second.erase({e.index, id});
  if (it->second.empty()) children_.erase(it);
}

bool Scene::is_self_or_ancestor(std::string_view candidate, std::string_view of) const {
  // Walks up from `of` to root; the tree has no cycle, so this ends.
  std::string_view cur = of;
  while (cur != kRoot) {
    if (cur == candidate) return true;
    auto it = entities_.find(std::string(cur));
    if (it == entities_.end()) return false;
    cur = it->second.parent;
  }
  return candidate == kRoot;
}

Error Scene::apply(const std::vector<Op>& batch, std::size_t* failed_op) {
  std::vector<Undo> undo;
  undo.reserve(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (auto e = apply_one(batch[i], undo)) {
      rollback(undo);
      if (failed_op != nullptr) *failed_op = i;
      e.message = "op " + std::to_string(i) + ": " + e.message;
      return e;
    }
  }
  return {};
}

Error Scene::apply_one(const Op& op, std::vector<Undo>& undo) {
  switch (op.kind) {
    case Op::Kind::Create: {
      if (contains(op.entity)) return fail(Code::Exists, "entity '" + op.entity + "' exists");
      if (!contains(op.parent)) {
        return fail(Code::NotFound, "parent '" + op.parent + "' does not exist");
      }
      if (entities_.size() >= max_entities_) {
        return fail_limit("entities_per_scene", Code::TooLarge,
                          "the scene holds at most " + std::to_string(max_entities_) + " entities");
      }
      Entity e{op.parent, op.index.value_or(""), op.props};
      link(op.entity, e);
      entities_.emplace(op.entity, std::move(e));
      undo.push_back({Undo::Created{op.entity}});
      return {};
    }
    case Op::Kind::Set: {
      if (op.entity == kRoot) return fail(Code::Invalid, "'root' has no properties");
      auto it = entities_.find(op.entity);
      if (it == entities_.end())
        return fail(Code::NotFound, "entity '" + op.entity + "' does not exist");
      auto& props = it->second.props;
      std::optional<boost::json::value> old;
      if (auto* cur = props.if_contains(op.key)) old = *cur;
      if (op.value.is_null()) {
        props.erase(op.key);
      } else {
        props[op.key] = op.value;
      }
      undo.push_back({Undo::PropSet{op.entity, op.key, std::move(old)}});
      return {};
    }
    case Op::Kind::Move: {
      if (op.entity == kRoot) return fail(Code::Invalid, "'root' cannot move");
      auto it = entities_.find(op.entity);
      if (it == entities_.end())
        return fail(Code::NotFound, "entity '" + op.entity + "' does not exist");
      if (!contains(op.parent))
        return fail(Code::NotFound, "parent '" + op.parent + "' does not exist");
      if (is_self_or_ancestor(op.entity, op.parent)) {
        return fail(Code::Cycle, "'" + op.parent + "' is '" + op.entity + "' or inside it");
      }
      Entity& e = it->second;
      undo.push_back({Undo::Moved{op.entity, e.parent, e.index}});
      unlink(op.entity, e);
      e.parent = op.parent;
      if (op.index) e.index = *op.index;
      link(op.entity, e);
      return {};
    }
    case Op::Kind::Delete: {
      if (op.entity == kRoot) return fail(Code::Invalid, "'root' cannot be deleted");
      auto it = entities_.find(op.entity);
      if (it == entities_.end())
        return fail(Code::NotFound, "entity '" + op.entity + "' does not exist");
      // Breadth-first from the entity: parents come before their children in `removed`.
      Undo::Deleted d;
      d.removed.emplace_back(op.entity, it->second);
      for (std::size_t i = 0; i < d.removed.size(); ++i) {
        auto kids = children_.find(d.removed[i].first);
        if (kids == children_.end()) continue;
        for (const auto& [index, id] : kids->second) d.removed.emplace_back(id, entities_.at(id));
      }
      for (auto r = d.removed.rbegin(); r != d.removed.rend(); ++r) {
        unlink(r->first, r->second);
        entities_.erase(r->first);
      }
      undo.push_back({std::move(d)});
      return {};
    }
  }
  return fail(Code::Invalid, "unknown op");
}

void Scene::rollback(std::vector<Undo>& undo) {
  for (auto u = undo.rbegin(); u != undo.rend(); ++u) {
    if (auto* c = std::get_if<Undo::Created>(&u->what)) {
      auto it = entities_.find(c->id);
      unlink(c->id, it->second);
      entities_.erase(it);
    } else if (auto* p = std::get_if<Undo::PropSet>(&u->what)) {
      auto& props = entities_.at(p->id).props;
      if (p->old) {
        props[p->key] = std::move(*p->old);
      } else {
        props.erase(p->key);
      }
    } else if (auto* m = std::get_if<Undo::Moved>(&u->what)) {
      Entity& e = entities_.at(m->id);
      unlink(m->id, e);
      e.parent = std::move(m->parent);
      e.index = std::move(m->index);
      link(m->id, e);
    } else if (auto* d = std::get_if<Undo::Deleted>(&u->what)) {
      for (auto& [id, e] : d->removed) {
        link(id, e);
        entities_.emplace(id, std::move(e));
      }
    }
  }
  undo.clear();
}

boost::json::object Scene::snapshot() const {
  // Sorted by id, so that equal scenes have byte-equal snapshots.
  std::vector<const std::pair<const std::string, Entity>*> sorted;
  sorted.reserve(entities_.size());
  for (const auto& kv : entities_) sorted.push_back(&kv);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  boost::json::object ents;
  ents.reserve(entities_.size());
  for (const auto* kv : sorted) {
    const auto& [id, e] = *kv;
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

Error Scene::from_snapshot(const boost::json::value& snap, Scene& out) {
  const auto* obj = snap.if_object();
  const auto* ents = obj ? obj->if_contains("entities") : nullptr;
  if (ents == nullptr || !ents->is_object())
    return fail(Code::Invalid, "snapshot needs 'entities'");
  Scene s(out.max_entities_);
  for (const auto& kv : ents->get_object()) {
    const auto* e = kv.value().if_object();
    if (!valid_id(kv.key()) || kv.key() == kRoot || e == nullptr) {
      return fail(Code::Invalid, "bad entity '" + std::string(kv.key()) + "'");
    }
    const auto* parent = e->if_contains("parent");
    const auto* index = e->if_contains("index");
    const auto* props = e->if_contains("props");
    if (!parent || !parent->is_string() || !valid_id(parent->get_string()) || !index ||
        !index->is_string() || !props || !props->is_object()) {
      return fail(Code::Invalid, "bad entity '" + std::string(kv.key()) + "'");
    }
    Entity ent{std::string(parent->get_string()), std::string(index->get_string()),
               props->get_object()};
    std::string id(kv.key());
    s.link(id, ent);
    s.entities_.emplace(std::move(id), std::move(ent));
  }
  if (auto problem = s.check_invariants(); !problem.empty()) return fail(Code::Invalid, problem);
  out = std::move(s);
  return {};
}

std::string Scene::check_invariants() const {
  std::size_t linked = 0;
  for (const auto& [parent, kids] : children_) {
    if (!contains(parent)) return "children listed under missing parent '" + parent + "'";
    for (const auto& [index, id] : kids) {
      auto it = entities_.find(id);
      if (it == entities_.end()) return "child '" + id + "' does not exist";
      if (it->second.parent != parent || it->second.index != index) {
        return "child index out of date for '" + id + "'";
      }
      ++linked;
    }
  }
  if (linked != entities_.size()) return "some entities are missing from the child index";
  for (const auto& [id, e] : entities_) {
    // Each entity must reach root within size() steps; more means a cycle.
    std::string_view cur = id;
    std::size_t steps = 0;
    while (cur != kRoot) {
      auto it = entities_.find(std::string(cur));
      if (it == entities_.end())
        return "'" + id + "' is an orphan (missing '" + std::string(cur) + "')";
      cur = it->second.parent;
      if (++steps > entities_.size()) return "'" + id + "' is in a cycle";
    }
  }
  return {};
}

}  // namespace kiln::collab
