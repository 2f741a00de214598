// The journal on a real directory: records survive a reopen in order, a torn tail is
// dropped (never half-read), stored segments are deleted. A full disk: tests/e2e
// (test_durable_acks.py, on a small tmpfs).
#include "journal/journal.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>

namespace kiln::journal {
namespace {

namespace fs = std::filesystem;
using collab::LoggedBatch;

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/kiln-journal-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

Options at(const fs::path& dir) {
  Options o;
  o.dir = dir;
  return o;
}

LoggedBatch batch(const std::string& room, std::uint64_t seq) {
  return LoggedBatch{room, "ep1", seq, R"({"t":"ops","seq":)" + std::to_string(seq) + "}"};
}

// Appends and waits until the batch is durable.
void append_durable(Journal& j, LoggedBatch b) {
  std::promise<void> p;
  auto f = p.get_future();
  ASSERT_FALSE(j.append(std::move(b), [&p] { p.set_value(); }));
  ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

std::vector<fs::path> segments(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".kjl") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Journal, RecordsComeBackInOrderAfterAReopen) {
  TempDir dir;
  {
    std::vector<LoggedBatch> replay;
    auto j = Journal::open(at(dir.path), replay);
    EXPECT_TRUE(replay.empty());
    for (std::uint64_t s = 1; s <= 50; ++s) append_durable(*j, batch(s % 2 ? "p/a" : "p/b", s));
  }
  std::vector<LoggedBatch> replay;
  auto j = Journal::open(at(dir.path), replay);
  ASSERT_EQ(replay.size(), 50u);
  for (std::uint64_t s = 1; s <= 50; ++s) {
    EXPECT_EQ(replay[s - 1].seq, s);
    EXPECT_EQ(replay[s - 1].room, s % 2 ? "p/a" : "p/b");
    EXPECT_EQ(replay[s - 1].epoch, "ep1");
    EXPECT_EQ(replay[s - 1].frame, batch("", s).frame);
  }
  EXPECT_EQ(j->stats().replayed, 50u);
}

TEST(Journal, CallbacksRunInTheOrderQueuedAfterTheirGroupIsDurable) {
  TempDir dir;
  std::vector<LoggedBatch> replay;
  auto j = Journal::open(at(dir.path), replay);
  std::mutex mu;
  std::vector<int> order;
  std::promise<void> all;
  for (int i = 0; i < 200; ++i) {
    auto record = [&, i] {
      std::lock_guard lock(mu);
      order.push_back(i);
      if (order.size() == 200) all.set_value();
    };
    if (i % 10 == 0) {
      j->after_durable(record);
    } else {
      ASSERT_FALSE(j->append(batch("p/a", static_cast<std::uint64_t>(i)), record));
    }
  }
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i);
  EXPECT_LT(j->stats().syncs, 200u) << "group commit: fewer fsyncs than batches";
}

// Every way a crash can cut the last record: its length, its checksum or its body. What
// came before is kept; the cut record is not returned, not even partly.
TEST(Journal, ATornTailIsDroppedAndWhatCameBeforeIsKept) {
  const auto good = Journal::encode(batch("p/a", 1)) + Journal::encode(batch("p/a", 2));
  const auto last = Journal::encode(batch("p/a", 3));
  for (std::size_t cut = 1; cut < last.size(); ++cut) {
    bool torn = false;
    auto records = Journal::decode(good + last.substr(0, cut), torn);
    ASSERT_EQ(records.size(), 2u) << "cut at " << cut;
    EXPECT_TRUE(torn) << "cut at " << cut;
  }
  auto flipped = last;
  flipped[last.size() - 2] ^= 0x40;  // a bit flipped in the body: the checksum fails
  bool torn = false;
  EXPECT_EQ(Journal::decode(good + flipped, torn).size(), 2u);
  EXPECT_TRUE(torn);
  EXPECT_EQ(Journal::decode(good + last + std::string(100, '\0'), torn).size(), 3u);
  EXPECT_FALSE(torn) << "zeros after the last record are the reserved, unwritten rest";
}

TEST(Journal, ATruncatedFileOnDiskReplaysItsWholeRecordsOnly) {
  TempDir dir;
  {
    std::vector<LoggedBatch> replay;
    auto j = Journal::open(at(dir.path), replay);
    for (std::uint64_t s = 1; s <= 10; ++s) append_durable(*j, batch("p/a", s));
  }
  // Cut the file in the middle of record 10, as a crash during its write would.
  const auto seg = segments(dir.path).back();
  const auto rec = Journal::encode(batch("p/a", 10)).size();
  const auto end = 16 + 10 * rec;  // header + ten records of the same size
  fs::resize_file(seg, end - rec / 2);
  std::vector<LoggedBatch> replay;
  auto j = Journal::open(at(dir.path), replay);
  ASSERT_EQ(replay.size(), 9u);
  EXPECT_EQ(replay.back().seq, 9u);
  EXPECT_EQ(j->stats().torn, 1u);
}

TEST(Journal, SegmentsCoveredByStoredSnapshotsAreDeleted) {
  TempDir dir;
  std::vector<LoggedBatch> replay;
  Options o = at(dir.path);
  o.segment_bytes = 1 << 16;
  auto j = Journal::open(o, replay);
  const std::string big(4000, 'x');
  for (std::uint64_t s = 1; s <= 60; ++s) {
    auto b = batch(s % 2 ? "p/a" : "p/b", s);
    b.frame = big;
    append_durable(*j, b);
  }
  const auto before = segments(dir.path).size();
  ASSERT_GE(before, 3u);
  j->stored("p/a", 59);  // p/b still needs its records
  EXPECT_EQ(segments(dir.path).size(), before);
  j->stored("p/b", 60);
  EXPECT_EQ(segments(dir.path).size(), 1u) << "only the segment being written stays";
  EXPECT_EQ(j->stats().segments, 1u);
}

// Interval mode acks before the fsync: after the machine (not only Kiln) restarted, the
// journal cannot vouch for every ack, says so, and keeps saying so (the `uncertain` file)
// until an operator removes the file.
TEST(Journal, IntervalModeReportsAMachineRestartUntilTheOperatorClearsIt) {
  TempDir dir;
  auto open_with = [&](Fsync mode, const std::string& boot) {
    Options o = at(dir.path);
    o.fsync = mode;
    o.boot_id = boot;
    std::vector<LoggedBatch> replay;
    auto j = Journal::open(o, replay);
    const auto st = j->stats();
    append_durable(*j, batch("p/a", replay.size() + 1));
    return std::pair{st.machine_restarted, st.history_uncertain};
  };
  using P = std::pair<bool, bool>;
  EXPECT_EQ(open_with(Fsync::Interval, "boot-1"), (P{false, false})) << "a new journal";
  EXPECT_EQ(open_with(Fsync::Interval, "boot-1"), (P{false, false})) << "Kiln restarted only";
  EXPECT_EQ(open_with(Fsync::Group, "boot-2"), (P{true, true}))
      << "the machine restarted after interval mode wrote: today's mode does not matter";
  EXPECT_EQ(open_with(Fsync::Group, "boot-2"), (P{false, true})) << "still uncertain";
  fs::remove(dir.path / "uncertain");
  EXPECT_EQ(open_with(Fsync::Group, "boot-3"), (P{false, false}))
      << "group mode fsyncs before every ack: a restart loses none";
}

TEST(Journal, TheRealBootIdIsRead) {
  TempDir dir;
  Options o = at(dir.path);
  o.fsync = Fsync::Interval;
  std::vector<LoggedBatch> replay;
  Journal::open(o, replay).reset();
  std::string boot;
  std::ifstream(dir.path / "boot_id") >> boot;
  EXPECT_EQ(boot.size(), 36u) << "a UUID from /proc/sys/kernel/random/boot_id";
}

}  // namespace
}  // namespace kiln::journal
