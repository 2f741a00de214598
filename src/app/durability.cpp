#include "app/durability.hpp"

#include "collab/memory_engine.hpp"
#include "platform/config.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"

namespace kiln::app {

std::unique_ptr<journal::Journal> open_journal(const config::Config& cfg,
                                               const std::filesystem::path& dir,
                                               metrics::Registry& registry,
                                               collab::MemoryRoomEngine& engine) {
  journal::Options jo;
  jo.dir = dir;
  jo.fsync =
      cfg.str("journal.fsync") == "interval" ? journal::Fsync::Interval : journal::Fsync::Group;
  jo.interval = std::chrono::milliseconds(cfg.integer("journal.fsync_interval_ms"));
  jo.segment_bytes = static_cast<std::size_t>(cfg.integer("journal.segment_bytes"));
  std::vector<collab::LoggedBatch> recovered;
  auto j = journal::Journal::open(jo, recovered);
  const auto st = j->stats();
  log::info("journal open", {{"dir", dir.string()},
                             {"fsync", cfg.str("journal.fsync")},
                             {"records_replayed", static_cast<std::int64_t>(st.replayed)},
                             {"torn_tails", static_cast<std::int64_t>(st.torn)},
                             {"damaged_segments", static_cast<std::int64_t>(st.damaged)}});
  auto& gaps = registry
                   .counter("kiln_journal_replay_gaps_total",
                            "Rooms whose journaled batches did not continue their stored "
                            "snapshot at start-up (given a new epoch: clients resync).")
                   .get();
  engine.set_on_replay_gap([&gaps](const std::string& room) {
    gaps.inc();
    log::warn("journal: a room's logged batches do not continue its snapshot; new epoch",
              {{"room", room}});
  });
  auto* jp = j.get();
  auto stat = [jp](std::uint64_t journal::Stats::*field) {
    return [jp, field] { return static_cast<double>(jp->stats().*field); };
  };
  registry.callback_gauge("kiln_journal_records_total", "Batches written to the journal.",
                          stat(&journal::Stats::records), true);
  registry.callback_gauge("kiln_journal_bytes_total", "Bytes written to the journal.",
                          stat(&journal::Stats::bytes), true);
  registry.callback_gauge("kiln_journal_syncs_total",
                          "fdatasync calls (one per group of batches in fsync group mode).",
                          stat(&journal::Stats::syncs), true);
  registry.callback_gauge("kiln_journal_refusals_total",
                          "Batches refused because the journal could not reserve disk space "
                          "(nack unavailable: the disk is full).",
                          stat(&journal::Stats::refused), true);
  registry.callback_gauge("kiln_journal_segments", "Journal segment files on disk.",
                          stat(&journal::Stats::segments));
  registry.callback_gauge("kiln_journal_damaged_segments",
                          "Journal segments found damaged at start-up and set aside (every room "
                          "then started a new epoch).",
                          stat(&journal::Stats::damaged));
  registry.callback_gauge("kiln_journal_torn_tails",
                          "Torn records dropped at the end of the newest segment at start-up "
                          "(a crash while writing; never acknowledged).",
                          stat(&journal::Stats::torn));
  engine.set_batch_log(jp, std::move(recovered), !st.history_uncertain);
  return j;
}

}  // namespace kiln::app
