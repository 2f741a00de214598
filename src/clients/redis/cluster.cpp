#include "clients/redis/cluster.hpp"

#include <charconv>

namespace kiln::redis {

std::uint16_t key_slot(std::string_view key) {
  // Only the part inside the first {...} counts, when it is not empty (the Cluster spec).
  auto open = key.find('{');
  if (open != std::string_view::npos) {
    auto close = key.find('}', open + 1);
    if (close != std::string_view::npos && close != open + 1)
      key = key.substr(open + 1, close - open - 1);
  }
  std::uint16_t crc = 0;
  for (unsigned char c : key) {
    crc ^= static_cast<std::uint16_t>(c << 8);
    for (int i = 0; i < 8; ++i) {
      crc = static_cast<std::uint16_t>((crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1);
    }
  }
  return static_cast<std::uint16_t>(crc % kSlots);
}

bool SlotMap::load(const Reply& r) {
  if (r.type != Reply::Type::Array) return false;
  std::vector<Range> ranges;
  for (const auto& e : r.elements) {
    if (e.type != Reply::Type::Array || e.elements.size() < 3) return false;
    const auto& node = e.elements[2];
    if (e.elements[0].type != Reply::Type::Integer || e.elements[1].type != Reply::Type::Integer ||
        node.type != Reply::Type::Array || node.elements.size() < 2) {
      return false;
    }
    Range range{
        static_cast<std::uint16_t>(e.elements[0].integer),
        static_cast<std::uint16_t>(e.elements[1].integer),
        Endpoint{node.elements[0].str, static_cast<std::uint16_t>(node.elements[1].integer)}};
    ranges.push_back(std::move(range));
  }
  if (ranges.empty()) return false;
  ranges_ = std::move(ranges);
  return true;
}

std::optional<Endpoint> SlotMap::primary(std::uint16_t slot) const {
  for (const auto& r : ranges_) {
    if (slot >= r.first && slot <= r.last) return r.primary;
  }
  return std::nullopt;
}

std::vector<Endpoint> SlotMap::primaries() const {
  std::vector<Endpoint> out;
  for (const auto& r : ranges_) {
    bool seen = false;
    for (const auto& e : out) seen = seen || e == r.primary;
    if (!seen) out.push_back(r.primary);
  }
  return out;
}

std::optional<Redirect> parse_redirect(const Reply& reply) {
  if (!reply.is_error()) return std::nullopt;
  std::string_view s = reply.str;
  Redirect r;
  if (s.starts_with("MOVED ")) {
    s.remove_prefix(6);
  } else if (s.starts_with("ASK ")) {
    r.ask = true;
    s.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  auto space = s.find(' ');
  auto colon = s.rfind(':');
  if (space == std::string_view::npos || colon == std::string_view::npos || colon < space)
    return std::nullopt;
  unsigned slot = 0, port = 0;
  if (std::from_chars(s.data(), s.data() + space, slot).ec != std::errc() || slot >= kSlots)
    return std::nullopt;
  if (std::from_chars(s.data() + colon + 1, s.data() + s.size(), port).ec != std::errc() ||
      port > 65535) {
    return std::nullopt;
  }
  r.slot = static_cast<std::uint16_t>(slot);
  r.to = Endpoint{std::string(s.substr(space + 1, colon - space - 1)),
                  static_cast<std::uint16_t>(port)};
  return r;
}

}  // namespace kiln::redis
