// The append-only batch log of `kiln serve` (the collab::BatchLog adapter): every accepted
// batch is on disk before its ack. Group commit: the batches queued while one fsync runs
// share the next one. Start-up reads it back on top of the latest stored snapshots.
//
// On disk: <dir>/<20-digit number>.kjl segment files, each preallocated to
// `segment_bytes` (so that a full disk refuses a batch before it is accepted, never after),
// starting with the 8-byte magic "KILNJRN1", the segment number (u64) and the durable end
// (u64: the offset up to which records were fsync'd, as of the previous group), then records:
//   u32 body_length | u32 crc32(body) | body
//   body = u64 seq | u16 room_length | u16 epoch_length | u32 frame_length | room | epoch | frame
// integers little-endian, CRC-32 as in zlib/IEEE 802.3. A zero length ends a segment (the
// preallocated rest); a record whose length runs past the file or whose checksum fails is a
// torn write: it and everything after it in that segment are dropped, never half-applied.
// A torn record is expected only at the end of the newest segment (the last group, never
// acknowledged); anywhere else, or before the durable end, the segment is damaged: its
// readable records are replayed, a copy is kept as <name>.damaged, and Stats::damaged tells
// the engine to start every room in a new epoch.
// A segment whose every record is covered by a stored snapshot (stored()) is deleted.
#pragma once

#include "collab/batch_log.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace kiln::journal {

enum class Fsync {
  Group,    // fdatasync before the group's callbacks: an ack survives a power loss
  Interval  // callbacks once written; fdatasync every `interval`: survives a crash of Kiln
};

struct Options {
  std::filesystem::path dir;
  Fsync fsync = Fsync::Group;
  std::chrono::milliseconds interval{100};
  std::size_t segment_bytes = 16u << 20;
  // The kernel's boot id (/proc/sys/kernel/random/boot_id); tests inject another.
  std::string boot_id;
  // Called when a write or an fsync fails after a batch was queued: nothing queued since
  // the last durable group is acknowledged. The default logs and ends the process (exit
  // code 70) so that a restart replays what is on disk; PostgreSQL does the same.
  std::function<void(const std::string&)> on_fatal;
};

struct Stats {
  std::uint64_t records = 0;   // written since start
  std::uint64_t bytes = 0;     // record bytes written since start
  std::uint64_t syncs = 0;     // fdatasync calls
  std::uint64_t refused = 0;   // appends refused (no space)
  std::uint64_t segments = 0;  // segment files on disk now
  std::uint64_t replayed = 0;  // records read at open
  std::uint64_t torn = 0;      // segments whose tail was dropped at open
  // Interval mode only: the machine restarted since the journal was last open, so acked
  // batches not yet fsync'd may be gone; the engine then starts every room in a new epoch
  // (clients resync rather than diverge).
  bool machine_restarted = false;
  // Segments found damaged at open (a copy kept as <name>.damaged): the history is
  // uncertain, every room starts a new epoch.
  std::uint64_t damaged = 0;
  // This start or an earlier one found the history uncertain (a restart above, damage),
  // recorded in <dir>/uncertain until an operator removes it: rooms start new epochs.
  bool history_uncertain = false;
};

struct Opened;

class Journal final : public collab::BatchLog {
 public:
  // Creates `dir` if needed, reads every segment and starts a new one. Throws
  // std::runtime_error (with the path and the reason) when the directory is unusable.
  // `replay` receives the records found, in the order written.
  static std::unique_ptr<Journal> open(Options options, std::vector<collab::LoggedBatch>& replay);
  ~Journal() override;  // every queued callback runs (or the process ends) before it returns

  collab::Error append(collab::LoggedBatch batch, std::function<void()> on_durable) override;
  void after_durable(std::function<void()> fn) override;
  void stored(const std::string& room, std::uint64_t seq) override;

  [[nodiscard]] Stats stats() const;
  // For /readyz: why batches are refused now (no space for a segment), if they are.
  [[nodiscard]] std::optional<std::string> problem() const;

  // The record encoding, exposed for tests: encode() gives the bytes of one record;
  // decode() reads records from `data` until the end or the first torn one, and says
  // whether it stopped at a torn one.
  static std::string encode(const collab::LoggedBatch& b);
  // `consumed`: the bytes of whole records read.
  static std::vector<collab::LoggedBatch> decode(std::string_view data, bool& torn,
                                                 std::size_t* consumed = nullptr);

  struct Segment;

 private:
  explicit Journal(Options options);
  struct Pending {
    std::shared_ptr<Segment> segment;  // null: a barrier (after_durable)
    std::uint64_t offset = 0;
    std::string bytes;
    std::function<void()> done;
  };
  collab::Error rotate(std::size_t need);  // mu_ held
  void check_boot(bool had_segments);
  void check_uncertain();
  void set_aside(const std::filesystem::path& path, const std::string& why);
  void collect();  // mu_ held: deletes segments fully stored
  void run();
  void fatal(const std::string& what);

  Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Pending> pending_;
  std::shared_ptr<Segment> current_;
  std::vector<std::shared_ptr<Segment>> older_;  // oldest first
  std::map<std::string, std::uint64_t, std::less<>> stored_;
  std::uint64_t next_number_ = 1;
  bool stop_ = false;
  Stats stats_;
  std::optional<std::chrono::system_clock::time_point> no_space_since_;
  std::thread writer_;
};

}  // namespace kiln::journal
