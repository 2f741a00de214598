#include "engines/redis/room_copy.hpp"

#include <boost/json/array.hpp>

namespace kiln::engines {

void RoomCopy::reset(Rebuilt rb) {
  scene_ = std::move(rb.scene);
  epoch_ = std::move(rb.epoch);
  seq_ = rb.seq;
  log_ = std::move(rb.log);
}

void RoomCopy::forget_pending() {
  early_.clear();
  held_.clear();
  wait_seq_ = 0;
}

bool RoomCopy::apply(const OpsMessage& m, const Applied& applied) {
  std::vector<collab::Op> ops;
  if (!collab::parse_ops_frame(m.frame, ops) || scene_.apply(ops)) return false;
  seq_ = m.seq;
  auto frame = std::make_shared<const std::string>(m.frame);
  log_.push_back(frame);
  while (log_.size() > retention_) log_.pop_front();
  if (applied) applied(collab::OpsEvent{room_, m.seq, m.user, m.session, m.request_id, frame});
  return true;
}

RoomCopy::Arrival RoomCopy::receive(OpsMessage m, bool ready, const Applied& applied) {
  if (ready && m.seq <= seq_) return Arrival::Duplicate;  // a resubscribe, a fill overlap
  if (!ready || m.seq != seq_ + 1 || held_.count(m.seq) != 0) {
    early_.emplace(m.seq, std::move(m));
    return Arrival::Buffered;
  }
  if (!apply(m, applied)) return Arrival::Broken;
  return drain(applied) ? Arrival::Applied : Arrival::Broken;
}

bool RoomCopy::drain(const Applied& applied) {
  while (!early_.empty()) {
    auto it = early_.begin();
    if (it->first <= seq_) {
      early_.erase(it);
      continue;
    }
    if (it->first != seq_ + 1 || held_.count(it->first) != 0) break;
    auto m = std::move(it->second);
    early_.erase(it);
    if (!apply(m, applied)) return false;
  }
  return true;
}

bool RoomCopy::gap() const {
  return !early_.empty() && early_.begin()->first > seq_ + 1;
}

bool RoomCopy::release(std::uint64_t first, std::uint64_t last) {
  bool any = false;
  for (auto s = first; s <= last; ++s) any = held_.erase(s) != 0 || any;
  return any;
}

bool RoomCopy::enqueue(Submission s, std::size_t max) {
  if (queue_.size() >= max) return false;
  queue_.push_back(std::move(s));
  return true;
}

bool RoomCopy::may_send() const {
  return !queue_.empty() && seq_ >= wait_seq_ && held_.empty();
}

RoomCopy::Group RoomCopy::take_group(std::size_t max) {
  Group g;
  const std::size_t n = std::min(queue_.size(), max);
  std::vector<const std::vector<collab::Op>*> batches;
  batches.reserve(n);
  for (std::size_t i = 0; i < n; ++i) batches.push_back(queue_[i].ops.get());
  auto verdicts = scene_.validate_sequence(batches);
  for (std::size_t i = 0; i < n; ++i) {
    if (verdicts[i]) {
      g.refused.emplace_back(std::move(queue_[i]), std::move(verdicts[i]));
      continue;
    }
    auto& sub = queue_[i];
    boost::json::array arr;
    arr.reserve(sub.ops->size());
    for (const auto& op : *sub.ops) arr.push_back(collab::to_json(op));
    const std::uint64_t seq = seq_ + 1 + g.batches.size();
    g.messages.push_back(
        encode_ops(OpsMessage{seq, sub.author.user, sub.author.session, sub.request_id,
                              collab::encode::ops(room_, seq, sub.author.user, arr)}));
    g.batches.push_back(std::move(sub));
  }
  queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  return g;
}

void RoomCopy::requeue(std::vector<Submission> group) {
  for (auto it = group.rbegin(); it != group.rend(); ++it) queue_.push_front(std::move(*it));
}

collab::JoinResult RoomCopy::answer(const std::optional<collab::Since>& since) const {
  collab::JoinResult res;
  res.epoch = epoch_;
  res.seq = seq_;
  const std::uint64_t oldest = seq_ - log_.size();
  if (since && since->epoch == epoch_ && since->seq <= seq_ && since->seq >= oldest) {
    res.recovered = true;
    res.ops.assign(log_.begin() + static_cast<std::ptrdiff_t>(since->seq - oldest), log_.end());
  } else {
    res.snapshot = std::make_shared<const boost::json::object>(scene_.snapshot());
  }
  return res;
}

}  // namespace kiln::engines
