// The write-behind persister (the `worker` role; inside `kiln serve`). Rooms live in the
// room engine while hot; every `interval` this writes each dirty room's snapshot and seq to
// the database, one transaction per room, only if newer than what is stored. A room is
// written by one worker at a time: a lease per room in the database, renewed and checked
// in the same transaction as the write (a worker that stalled past its lease writes
// nothing). The engine's dirty mark is cleared only after the commit, and only if no later
// batch marked the room again. Every `reconcile_every` passes it also compares every room
// the engine holds with the stored seq, so a room whose mark went missing (a gateway that
// died between its append and its mark) is stored all the same.
#pragma once

#include "collab/persistence.hpp"
#include "store/rooms.hpp"

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace kiln::metrics {
class Registry;
}

namespace kiln::persist {

struct PersisterOptions {
  std::string holder = "worker";  // this worker's name in the leases (the node id)
  std::chrono::milliseconds interval{30'000};
  std::chrono::milliseconds lease{90'000};  // longer than interval: a live worker keeps its rooms
  std::size_t keep = 5;                     // snapshots kept per room
  int reconcile_every = 10;                 // passes between reconciliations (0: never)
  std::size_t max_rooms_per_pass = 10'000;
};

struct PassReport {
  std::size_t dirty = 0;             // rooms to look at (marked, plus found by reconciliation)
  std::size_t stored = 0;            // snapshots written
  std::size_t not_newer = 0;         // already stored at this seq or later
  std::size_t leased_elsewhere = 0;  // another worker holds the room
  std::size_t lease_lost = 0;        // the lease expired under us: nothing written
  std::size_t gone = 0;              // the engine no longer holds the room
  std::size_t failed = 0;            // left dirty for the next pass
  std::size_t reconciled = 0;        // rooms found stale without a dirty mark
  std::string error;                 // the first failure of the pass, if any
  bool database_down = false;        // the database did not answer (the pass stopped early)
};

class Persister {
 public:
  Persister(store::Database& store, collab::PersistSource& source, PersisterOptions options,
            metrics::Registry* registry = nullptr);
  ~Persister();
  Persister(const Persister&) = delete;
  Persister& operator=(const Persister&) = delete;

  // Runs passes every interval on a thread of its own.
  void start();
  // Ends the loop; with final_flush, one more pass first, so that a clean shutdown leaves
  // no dirty room behind. Idempotent.
  void stop(bool final_flush);
  // One pass, now, on the calling thread.
  PassReport pass(bool reconcile);

  // For /readyz: nullopt while passes succeed; else what is wrong, since when, and how
  // many rooms wait.
  [[nodiscard]] std::optional<std::string> problem() const;

 private:
  void loop();
  void record(const PassReport& r, double seconds);
  void store_room(const std::string& room, PassReport& report);
  // The engine could not answer: counted as a failure; the first error is the pass's.
  static void source_failed(const collab::SourceError& e, PassReport& report);

  struct Metrics;
  store::Rooms rooms_;
  collab::PersistSource& source_;
  PersisterOptions options_;
  std::unique_ptr<Metrics> metrics_;  // null without a registry

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool stopped_ = false;
  std::thread thread_;
  std::mutex pass_mu_;  // one pass at a time (the loop's and a final flush)

  mutable std::mutex state_mu_;
  std::string failing_since_;  // ISO time of the first failed pass in a row, "" when healthy
  std::string last_error_;
  std::size_t waiting_ = 0;
};

}  // namespace kiln::persist
