#include "store/rooms.hpp"

#include "platform/clock.hpp"

#include <algorithm>

namespace kiln::store {
namespace {

std::int64_t i64(std::uint64_t v) {
  return static_cast<std::int64_t>(v);
}

}  // namespace

bool Rooms::acquire_lease(const std::string& room, const std::string& holder,
                          std::chrono::milliseconds ttl) {
  bool got = false;
  const auto q =
      with_now(db_.dialect(),
               "INSERT INTO room_leases (room, holder, expires_at) VALUES ($1, $2, {now} + $3) "
               "ON CONFLICT (room) DO UPDATE SET holder = excluded.holder, expires_at = "
               "excluded.expires_at WHERE room_leases.expires_at <= {now} OR room_leases.holder = "
               "excluded.holder RETURNING holder");
  db_.write([&](Connection& c) {
    auto res = c.exec(q, {room, holder, std::int64_t{ttl.count()}});
    got = !res.rows.empty();
  });
  return got;
}

SaveResult Rooms::save_snapshot(const RoomSnapshot& s, const std::string& holder,
                                std::chrono::milliseconds lease_ttl, std::size_t keep) {
  SaveResult result = SaveResult::Stored;
  const auto renew =
      with_now(db_.dialect(),
               "UPDATE room_leases SET expires_at = {now} + $3 WHERE room = $1 AND holder = $2 AND "
               "expires_at > {now}");
  db_.write([&](Connection& c) {
    // The lease is the fence: a worker that lost it (paused past its expiry) writes nothing.
    if (c.exec(renew, {s.room, holder, std::int64_t{lease_ttl.count()}}).affected != 1) {
      result = SaveResult::LeaseLost;
      return;
    }
    auto cur = c.exec("SELECT MAX(seq) FROM room_snapshots WHERE room = $1", {s.room});
    if (!cur.rows.empty() && !cur.rows[0].null(0) &&
        cur.rows[0].i64(0) >= static_cast<std::int64_t>(s.seq)) {
      result = SaveResult::NotNewer;
      return;
    }
    c.exec(
        "INSERT INTO room_snapshots (room, seq, epoch, body, bytes, stored_at, writer) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        {s.room, i64(s.seq), s.epoch, s.body, static_cast<std::int64_t>(s.body.size()),
         clock::unix_ms(), holder});
    c.exec(
        "DELETE FROM room_snapshots WHERE room = $1 AND seq < (SELECT MIN(seq) FROM (SELECT "
        "seq FROM room_snapshots WHERE room = $1 ORDER BY seq DESC LIMIT $2) AS newest)",
        {s.room, static_cast<std::int64_t>(std::max<std::size_t>(1, keep))});
  });
  return result;
}

std::optional<RoomSnapshot> Rooms::latest_snapshot(const std::string& room) {
  std::optional<RoomSnapshot> out;
  db_.on_primary([&](Connection& c) {
    auto res = c.exec(
        "SELECT seq, epoch, body, stored_at FROM room_snapshots WHERE room = $1 ORDER BY seq "
        "DESC LIMIT 1",
        {room});
    if (res.rows.empty()) return;
    const auto& r = res.rows[0];
    out = RoomSnapshot{room, static_cast<std::uint64_t>(r.i64(0)), r.str(1), r.str(2), r.i64(3)};
  });
  return out;
}

std::map<std::string, std::uint64_t> Rooms::stored_seqs(const std::vector<std::string>& rooms) {
  std::map<std::string, std::uint64_t> out;
  constexpr std::size_t kChunk = 200;
  for (std::size_t i = 0; i < rooms.size(); i += kChunk) {
    const std::size_t n = std::min(kChunk, rooms.size() - i);
    std::string q = "SELECT room, MAX(seq) FROM room_snapshots WHERE room IN (";
    std::vector<Value> params;
    params.reserve(n);
    for (std::size_t k = 0; k < n; ++k) {
      q += (k ? ", $" : "$") + std::to_string(k + 1);
      params.emplace_back(rooms[i + k]);
    }
    q += ") GROUP BY room";
    db_.on_primary([&](Connection& c) {
      for (const auto& r : c.exec(q, params).rows)
        out[r.str(0)] = static_cast<std::uint64_t>(r.i64(1));
    });
  }
  return out;
}

}  // namespace kiln::store
