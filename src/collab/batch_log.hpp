// The port through which an embedded room engine makes accepted batches durable before
// anyone hears of them: the ack that an author receives means "this is on disk".
// The adapter is journal::Journal (an append-only, checksummed, group-committed log).
#pragma once

#include "collab/errors.hpp"

#include <cstdint>
#include <functional>
#include <string>

namespace kiln::collab {

// One accepted batch as the log keeps it.
struct LoggedBatch {
  std::string room;
  std::string epoch;
  std::uint64_t seq = 0;
  std::string frame;  // the `ops` frame peers receive (protocol.md), which holds the ops
};

class BatchLog {
 public:
  virtual ~BatchLog() = default;

  // Queues the batch (an empty frame records that the room starts epoch `epoch` at `seq`,
  // keeping its state). `on_durable` (may be empty) runs once it is on disk (fsync'd, or written in
  // the interval mode), on the log's own thread, after every callback queued before it. Calls for
  // one room come in seq order (the caller holds the room's lock). Refused with Code::Unavailable
  // (and after_ms) when the log cannot take it (no disk space): then nothing was queued and the
  // caller must not apply the batch.
  virtual Error append(LoggedBatch batch, std::function<void()> on_durable) = 0;

  // Runs `fn` on the log's thread once everything queued before this call is durable.
  virtual void after_durable(std::function<void()> fn) = 0;

  // The room's state up to `seq` is stored elsewhere (a database snapshot): its records up
  // to `seq` are no longer needed.
  virtual void stored(const std::string& room, std::uint64_t seq) = 0;
};

}  // namespace kiln::collab
