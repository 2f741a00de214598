// Redis Cluster routing, pure: key -> hash slot, the slot map from CLUSTER SLOTS, and the
// redirections (MOVED, ASK) a node answers with.
#pragma once

#include "clients/redis/reply.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::redis {

inline constexpr int kSlots = 16384;

// CRC16 (XMODEM) of the key, or of its hash tag `{...}` when it has a non-empty one.
std::uint16_t key_slot(std::string_view key);

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  [[nodiscard]] std::string str() const { return host + ":" + std::to_string(port); }
  bool operator==(const Endpoint&) const = default;
};

// Which primary serves each slot.
class SlotMap {
 public:
  // From a CLUSTER SLOTS reply; false when it is not one.
  bool load(const Reply& cluster_slots);
  [[nodiscard]] std::optional<Endpoint> primary(std::uint16_t slot) const;
  [[nodiscard]] std::vector<Endpoint> primaries() const;
  [[nodiscard]] bool empty() const { return ranges_.empty(); }

 private:
  struct Range {
    std::uint16_t first, last;
    Endpoint primary;
  };
  std::vector<Range> ranges_;
};

struct Redirect {
  bool ask = false;  // ASK: this command only, preceded by ASKING; MOVED: the map is stale
  std::uint16_t slot = 0;
  Endpoint to;
};
// Parses "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381".
std::optional<Redirect> parse_redirect(const Reply& reply);

}  // namespace kiln::redis
