#include "engines/redis/redis_messages.hpp"

#include <boost/json/parse.hpp>

#include <charconv>

namespace kiln::engines {

namespace json = boost::json;
using redis::Reply;

std::string str(const json::value& v) {
  return v.is_string() ? std::string(v.get_string()) : std::string();
}

std::string field(const json::value& v, std::string_view name) {
  const auto* o = v.if_object();
  const auto* f = o ? o->if_contains(name) : nullptr;
  return f ? str(*f) : std::string();
}

std::uint64_t to_u64(std::string_view s) {
  std::uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::uint64_t reply_u64(const Reply& r) {
  if (r.type == Reply::Type::Integer) return static_cast<std::uint64_t>(r.integer);
  return to_u64(r.str);
}

std::string encode_ops(const OpsMessage& m) {
  return "o\n" + std::to_string(m.seq) + "\n" + m.user + "\n" + m.session + "\n" +
         std::to_string(m.request_id) + "\n" + m.frame;
}

std::optional<OpsMessage> decode_ops(std::string_view s) {
  std::string_view parts[5];
  for (auto& part : parts) {
    auto nl = s.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    part = s.substr(0, nl);
    s.remove_prefix(nl + 1);
  }
  if (parts[0] != "o") return std::nullopt;
  OpsMessage m;
  m.seq = to_u64(parts[1]);
  m.user = parts[2];
  m.session = parts[3];
  std::from_chars(parts[4].data(), parts[4].data() + parts[4].size(), m.request_id);
  m.frame = s;
  return m;
}

std::optional<Rebuilt> rebuild(const Reply& r, std::size_t max_entities, std::size_t retention) {
  if (r.elements.size() < 5) return std::nullopt;
  // Stored and accepted under the limits of their day: rebuilt whatever the limit is now.
  Rebuilt out{collab::Scene(SIZE_MAX), r.elements[0].str, reply_u64(r.elements[2]), {}};
  const std::uint64_t snap_seq = out.seq;
  if (!r.elements[3].str.empty()) {
    boost::system::error_code ec;
    auto snap = json::parse(r.elements[3].str, ec);
    if (ec || collab::Scene::from_snapshot(snap, out.scene)) return std::nullopt;
  }
  std::deque<std::shared_ptr<const std::string>> older;  // resume tail before snap_seq
  for (const auto& entry : r.elements[4].elements) {
    if (entry.elements.size() < 2 || entry.elements[1].elements.size() < 2) continue;
    auto m = decode_ops(entry.elements[1].elements[1].str);
    if (!m) continue;
    if (m->seq <= snap_seq) {
      older.push_back(std::make_shared<const std::string>(m->frame));
      continue;
    }
    std::vector<collab::Op> ops;
    if (m->seq != out.seq + 1 || !collab::parse_ops_frame(m->frame, ops) || out.scene.apply(ops))
      break;
    out.seq = m->seq;
    out.log.push_back(std::make_shared<const std::string>(m->frame));
  }
  for (auto it = older.rbegin(); it != older.rend(); ++it) out.log.push_front(*it);
  while (out.log.size() > retention) out.log.pop_front();
  out.scene.set_max_entities(max_entities);
  return out;
}

}  // namespace kiln::engines
