#include "app/durability.hpp"

#include "engines/memory/memory_engine.hpp"
#include "platform/config.hpp"
#include "platform/log.hpp"
#include "platform/metrics.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fstream>

namespace kiln::app {

std::unique_ptr<journal::Journal> open_journal(const config::Config& cfg,
                                               const std::filesystem::path& dir,
                                               metrics::Registry& registry,
                                               engines::MemoryRoomEngine& engine) {
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

std::string stable_node_id(const std::filesystem::path& dir, const std::string& fresh) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  const auto path = dir / "node-id";
  std::string id;
  if (std::ifstream in(path); in >> id && !id.empty()) return id;
  const auto tmp = dir / "node-id.tmp";
  if (std::ofstream out(tmp, std::ios::trunc); !(out << fresh << "\n")) return "";
  fs::rename(tmp, path, ec);
  return ec ? "" : fresh;
}

bool lock_data_dir(const std::filesystem::path& dir) {
  const int fd = ::open((dir / "lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return true;  // the data directory check reports what is wrong with it
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return false;
  }
  return true;  // fd stays open: the lock lasts as long as the process
}

void warn_unread_journal(const std::filesystem::path& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".kjl") continue;
    log::warn(
        "journal.enabled is false but the data directory holds a journal: batches it "
        "holds after the stored snapshots are not replayed",
        {{"dir", dir.string()}});
    return;
  }
}

}  // namespace kiln::app
