// The node-local side of fan-out: which of this node's sessions are in which room, and
// the ephemeral coalescer. The engine delivers each room's events to the hub once per
// node; the hub copies them to local members (ops to peers, the ack to the author) and
// checks sequence numbers so a member never sees a gap or a duplicate.
#pragma once

#include "collab/room_engine.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace kiln::collab {

// A session as the hub sees it. deliver() is called from any thread, with hub and
// engine locks held: it must only enqueue, never block or call back into the hub.
class Subscriber {
 public:
  virtual ~Subscriber() = default;
  virtual void deliver(std::shared_ptr<const std::string> frame) = 0;
  // The member missed ops of `room` that the hub could not supply: it must resync
  // (the session tells the client to reconnect, which resumes with `since`).
  virtual void lost_sync(const std::string& room) = 0;
};

struct HubStats {
  std::uint64_t duplicates_dropped = 0;
  std::uint64_t gaps = 0;
};

class Hub final : public RoomEvents {
 public:
  explicit Hub(std::string node) : node_(std::move(node)) {}

  // Registers `sub` in `room`, expecting ops after `seq` next.
  void add(const std::string& room, const Member& member, std::weak_ptr<Subscriber> sub,
           std::uint64_t seq);
  void remove(const std::string& room, const std::string& session);

  // Keeps the latest `data` per (session, kind) until the next flush.
  void eph(const std::string& room, const Member& member, const std::string& kind,
           std::string data);
  // One batch per room with pending updates, to publish through the engine. Called once
  // per tick; the caller publishes outside the hub's lock.
  std::vector<EphBatch> take_eph();

  void on_ops(const OpsEvent& ev) override;
  void on_eph(const EphBatch& batch) override;
  void on_presence(const PresenceEvent& ev) override;
  void on_reset(const std::string& room) override;

  [[nodiscard]] std::size_t rooms() const;
  [[nodiscard]] HubStats stats() const;

 private:
  struct Local {
    Member member;
    std::weak_ptr<Subscriber> sub;
    std::uint64_t seq = 0;  // last seq delivered
  };
  struct PendingEph {
    std::map<std::pair<std::string, std::string>, encode::EphEntry> latest;  // (session, kind)
  };

  std::string node_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::map<std::string, Local>>
      rooms_;  // room -> session -> member
  std::unordered_map<std::string, PendingEph> pending_;
  HubStats stats_;
};

}  // namespace kiln::collab
