// Scene operations: their typed form and the structural validation of their JSON form.
// Structural checks (shapes, id syntax, key length) need no scene; semantic checks
// (exists, not_found, cycle) happen when a batch is applied to a Scene.
#pragma once

#include "collab/errors.hpp"

#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <vector>

namespace kiln::collab {

inline constexpr std::string_view kRoot = "root";
inline constexpr std::size_t kMaxIdLength = 64;
inline constexpr std::size_t kMaxKeyLength = 128;
inline constexpr std::size_t kMaxIndexLength = 256;

struct Op {
  enum class Kind { Create, Set, Move, Delete };
  Kind kind = Kind::Create;
  std::string entity;
  std::string parent;                // Create, Move
  std::optional<std::string> index;  // Create, Move: absent keeps (Move) or is "" (Create)
  boost::json::object props;         // Create
  std::string key;                   // Set
  boost::json::value value;          // Set: null removes the key
};

// 1-64 characters of [A-Za-z0-9_-].
bool valid_id(std::string_view id);

// Parses one op; on failure returns an `invalid` error naming the field.
Error parse_op(const boost::json::value& v, Op& out);
// Parses a batch: a non-empty array of at most `max_ops` ops (`too_large` beyond).
Error parse_batch(const boost::json::value& v, std::size_t max_ops, std::vector<Op>& out);

// The ops of a server `ops` frame (protocol.md) as a log keeps it: false when the text is
// not one. No limit on the count: the frame was accepted once already.
bool parse_ops_frame(std::string_view frame, std::vector<Op>& out);

// The canonical JSON form of an op, as broadcast to peers.
boost::json::object to_json(const Op& op);

}  // namespace kiln::collab
