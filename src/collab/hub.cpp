#include "collab/hub.hpp"

namespace kiln::collab {

void Hub::add(const std::string& room, const Member& member, std::weak_ptr<Subscriber> sub,
              std::uint64_t seq) {
  std::lock_guard lock(mu_);
  rooms_[room][member.session] = Local{member, std::move(sub), seq};
}

void Hub::remove(const std::string& room, const std::string& session) {
  std::lock_guard lock(mu_);
  auto it = rooms_.find(room);
  if (it == rooms_.end()) return;
  it->second.erase(session);
  if (it->second.empty()) rooms_.erase(it);
  auto p = pending_.find(room);
  if (p != pending_.end()) {
    std::erase_if(p->second.latest, [&](const auto& kv) { return kv.first.first == session; });
  }
}

void Hub::eph(const std::string& room, const Member& member, const std::string& kind,
              std::string data) {
  std::lock_guard lock(mu_);
  auto& slot = pending_[room].latest[{member.session, kind}];
  slot.user = member.user;
  slot.session = member.session;
  slot.kind = kind;
  slot.data = std::move(data);
}

std::vector<EphBatch> Hub::take_eph() {
  std::unordered_map<std::string, PendingEph> taken;
  {
    std::lock_guard lock(mu_);
    taken.swap(pending_);
  }
  std::vector<EphBatch> out;
  out.reserve(taken.size());
  for (auto& [room, p] : taken) {
    if (p.latest.empty()) continue;
    EphBatch b{room, node_, {}};
    b.entries.reserve(p.latest.size());
    for (auto& [key, entry] : p.latest) b.entries.push_back(std::move(entry));
    out.push_back(std::move(b));
  }
  return out;
}

void Hub::on_ops(const OpsEvent& ev) {
  std::vector<std::shared_ptr<Subscriber>> lost;
  {
    std::lock_guard lock(mu_);
    auto it = rooms_.find(ev.room);
    if (it == rooms_.end()) return;
    for (auto& [session, local] : it->second) {
      auto sub = local.sub.lock();
      if (!sub) continue;
      if (ev.seq <= local.seq) {
        ++stats_.duplicates_dropped;
        continue;
      }
      if (ev.seq != local.seq + 1) {
        ++stats_.gaps;
        lost.push_back(sub);
        continue;
      }
      local.seq = ev.seq;
      if (session == ev.author_session) {
        sub->deliver(
            std::make_shared<const std::string>(encode::ack(ev.request_id, ev.room, ev.seq)));
      } else {
        sub->deliver(ev.frame);
      }
    }
  }
  for (auto& sub : lost) sub->lost_sync(ev.room);
}

void Hub::on_eph(const EphBatch& batch) {
  std::lock_guard lock(mu_);
  auto it = rooms_.find(batch.room);
  if (it == rooms_.end()) return;
  // Members whose own entries are in the batch get a copy without them; everyone else
  // shares one frame.
  std::vector<const encode::EphEntry*> all;
  all.reserve(batch.entries.size());
  for (const auto& e : batch.entries) all.push_back(&e);
  std::shared_ptr<const std::string> shared;
  for (auto& [session, local] : it->second) {
    auto sub = local.sub.lock();
    if (!sub) continue;
    bool own = false;
    for (const auto* e : all) own = own || e->session == session;
    if (!own) {
      if (!shared) shared = std::make_shared<const std::string>(encode::eph(batch.room, all));
      sub->deliver(shared);
      continue;
    }
    std::vector<const encode::EphEntry*> others;
    for (const auto* e : all) {
      if (e->session != session) others.push_back(e);
    }
    if (!others.empty())
      sub->deliver(std::make_shared<const std::string>(encode::eph(batch.room, others)));
  }
}

void Hub::on_presence(const PresenceEvent& ev) {
  std::lock_guard lock(mu_);
  auto it = rooms_.find(ev.room);
  if (it == rooms_.end()) return;
  auto frame = std::make_shared<const std::string>(encode::presence(ev.room, ev.joined, ev.left));
  for (auto& [session, local] : it->second) {
    bool about_self = false;
    for (const auto& j : ev.joined) about_self = about_self || j.session == session;
    for (const auto& l : ev.left) about_self = about_self || l == session;
    if (about_self) continue;
    if (auto sub = local.sub.lock()) sub->deliver(frame);
  }
}

void Hub::on_reset(const std::string& room) {
  std::vector<std::shared_ptr<Subscriber>> members;
  {
    std::lock_guard lock(mu_);
    auto it = rooms_.find(room);
    if (it == rooms_.end()) return;
    for (auto& [session, local] : it->second) {
      if (auto sub = local.sub.lock()) members.push_back(std::move(sub));
    }
    ++stats_.gaps;
  }
  for (auto& m : members) m->lost_sync(room);
}

std::size_t Hub::rooms() const {
  std::lock_guard lock(mu_);
  return rooms_.size();
}

HubStats Hub::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace kiln::collab
