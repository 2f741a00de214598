#include "journal/journal.hpp"

#include "journal/files.hpp"

#include "platform/log.hpp"

#include <boost/crc.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <optional>
#include <set>
#include <stdexcept>

namespace kiln::journal {
namespace fs = std::filesystem;
using collab::Code;
using collab::LoggedBatch;
using files::errno_text;
using files::pwrite_all;
using files::read_file;
using files::sync_dir;
using files::write_small_file;

namespace {

constexpr char kMagic[8] = {'K', 'I', 'L', 'N', 'J', 'R', 'N', '1'};
constexpr std::size_t kHeader = 24;     // magic, segment number, durable end
constexpr std::size_t kRecordHead = 8;  // length + crc
constexpr std::size_t kBodyFixed = 16;  // seq + room, epoch and frame lengths
constexpr std::uint32_t kMaxBody = 1u << 30;

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  for (std::size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out.append(b, sizeof(T));
}

template <class T>
T get(const char* p) {
  T v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<T>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

std::uint32_t crc32(std::string_view s) {
  boost::crc_32_type c;
  c.process_bytes(s.data(), s.size());
  return c.checksum();
}

fs::path segment_path(const fs::path& dir, std::uint64_t number) {
  char name[32];
  std::snprintf(name, sizeof name, "%020llu.kjl", static_cast<unsigned long long>(number));
  return dir / name;
}

}  // namespace

struct Journal::Segment {
  std::uint64_t number = 0;
  fs::path path;
  int fd = -1;
  std::uint64_t capacity = 0;
  std::uint64_t used = 0;
  // The writer thread's: how far records are written, fsync'd, and claimed in the header.
  std::uint64_t written_end = 0;
  std::uint64_t synced_end = 0;
  std::uint64_t claimed_end = 0;
  std::map<std::string, std::uint64_t, std::less<>> rooms;  // room -> highest seq held
  ~Segment() {
    if (fd >= 0) ::close(fd);
  }
};

std::string Journal::encode(const LoggedBatch& b) {
  std::string body;
  body.reserve(kBodyFixed + b.room.size() + b.epoch.size() + b.frame.size());
  put<std::uint64_t>(body, b.seq);
  put<std::uint16_t>(body, static_cast<std::uint16_t>(b.room.size()));
  put<std::uint16_t>(body, static_cast<std::uint16_t>(b.epoch.size()));
  put<std::uint32_t>(body, static_cast<std::uint32_t>(b.frame.size()));
  body += b.room;
  body += b.epoch;
  body += b.frame;
  std::string out;
  out.reserve(kRecordHead + body.size());
  put<std::uint32_t>(out, static_cast<std::uint32_t>(body.size()));
  put<std::uint32_t>(out, crc32(body));
  out += body;
  return out;
}

std::vector<LoggedBatch> Journal::decode(std::string_view data, bool& torn, std::size_t* consumed) {
  std::vector<LoggedBatch> out;
  torn = false;
  const std::size_t total = data.size();
  while (data.size() >= kRecordHead) {
    const auto len = get<std::uint32_t>(data.data());
    if (len == 0) break;  // the preallocated, never written rest
    const auto crc = get<std::uint32_t>(data.data() + 4);
    if (len < kBodyFixed || len > kMaxBody || len > data.size() - kRecordHead) break;
    const auto body = data.substr(kRecordHead, len);
    if (crc32(body) != crc) break;
    LoggedBatch b;
    b.seq = get<std::uint64_t>(body.data());
    const std::size_t room_len = get<std::uint16_t>(body.data() + 8);
    const std::size_t epoch_len = get<std::uint16_t>(body.data() + 10);
    const std::size_t frame_len = get<std::uint32_t>(body.data() + 12);
    if (kBodyFixed + room_len + epoch_len + frame_len != len) break;
    b.room = body.substr(kBodyFixed, room_len);
    b.epoch = body.substr(kBodyFixed + room_len, epoch_len);
    b.frame = body.substr(kBodyFixed + room_len + epoch_len, frame_len);
    out.push_back(std::move(b));
    data.remove_prefix(kRecordHead + len);
  }
  // Bytes left that are not a whole, valid record (or a zero end mark): a torn write.
  torn = !data.empty() && std::any_of(data.begin(), data.end(), [](char c) { return c != 0; });
  if (consumed) *consumed = total - data.size();
  return out;
}

Journal::Journal(Options options) : options_(std::move(options)) {}

std::unique_ptr<Journal> Journal::open(Options options, std::vector<LoggedBatch>& replay) {
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec)
    throw std::runtime_error("journal: cannot create " + options.dir.string() + ": " +
                             ec.message());
  std::unique_ptr<Journal> j(new Journal(std::move(options)));
  std::vector<std::pair<std::uint64_t, fs::path>> files;
  for (const auto& entry : fs::directory_iterator(j->options_.dir, ec)) {
    const auto name = entry.path().filename().string();
    if (entry.path().extension() != ".kjl" || name.size() != 24) continue;
    std::error_code type_ec;
    if (!fs::is_regular_file(entry.path(), type_ec))
      throw std::runtime_error("journal: " + entry.path().string() +
                               " is not a regular file; move it out of the journal directory");
    files.emplace_back(std::strtoull(name.c_str(), nullptr, 10), entry.path());
  }
  if (ec)
    throw std::runtime_error("journal: cannot list " + j->options_.dir.string() + ": " +
                             ec.message());
  std::sort(files.begin(), files.end());
  j->check_boot(!files.empty());
  for (const auto& [number, path] : files) {
    std::string data;
    if (!read_file(path, data))
      throw std::runtime_error("journal: cannot read " + path.string() + ": " + errno_text(errno));
    auto seg = std::make_shared<Segment>();
    seg->number = number;
    seg->path = path;
    j->next_number_ = std::max(j->next_number_, number + 1);
    const bool newest = number == files.back().first;
    if (data.size() < kHeader || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0) {
      // Created but never given its header (a crash at that moment) reads as zeros: empty.
      // Anything else is damage.
      if (std::any_of(data.begin(), data.end(), [](char c) { return c != 0; }))
        j->set_aside(path, "its header is not a journal segment's");
      j->older_.push_back(seg);
      continue;
    }
    bool torn = false;
    std::size_t consumed = 0;
    auto records = decode(std::string_view(data).substr(kHeader), torn, &consumed);
    const auto durable_end = get<std::uint64_t>(data.data() + 16);
    if (kHeader + consumed < durable_end) {
      j->set_aside(path, "records that were acknowledged are unreadable (" +
                             std::to_string(durable_end - kHeader - consumed) + " bytes)");
    } else if (torn && !newest) {
      j->set_aside(path, "an unreadable record in a segment that was complete");
    } else if (torn) {
      ++j->stats_.torn;
      log::warn(
          "journal: a torn record at the end of the newest segment was dropped (a crash "
          "while writing it; it was not acknowledged)",
          {{"file", path.string()}, {"records_kept", records.size()}});
    }
    for (auto& r : records) {
      auto& top = seg->rooms[r.room];
      top = std::max(top, r.seq);
      replay.push_back(std::move(r));
    }
    j->stats_.replayed += records.size();
    j->older_.push_back(seg);
  }
  j->check_uncertain();
  {
    // No space for a segment now: start anyway (replaying needs none); batches are refused
    // until there is.
    std::lock_guard lock(j->mu_);
    if (auto e = j->rotate(0))
      log::warn("journal: " + e.message, {{"dir", j->options_.dir.string()}});
  }
  j->writer_ = std::thread([p = j.get()] { p->run(); });
  return j;
}

Journal::~Journal() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

collab::Error Journal::rotate(std::size_t need) {
  const std::uint64_t capacity = std::max<std::uint64_t>(options_.segment_bytes, kHeader + need);
  auto seg = std::make_shared<Segment>();
  seg->number = next_number_;
  seg->path = segment_path(options_.dir, seg->number);
  seg->capacity = capacity;
  seg->used = kHeader;
  seg->fd = ::open(seg->path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (seg->fd < 0)
    return collab::fail(Code::Unavailable, "cannot create a journal segment: " + errno_text(errno),
                        1'000);
  // Reserve the whole segment now: a write into reserved space cannot meet a full disk.
  if (const int e = ::posix_fallocate(seg->fd, 0, static_cast<off_t>(capacity)); e != 0) {
    ::close(seg->fd);
    seg->fd = -1;
    ::unlink(seg->path.c_str());
    ++stats_.refused;
    if (!no_space_since_) {
      no_space_since_ = std::chrono::system_clock::now();
      log::warn("journal: no space for a new segment; batches are refused until there is",
                {{"dir", options_.dir.string()},
                 {"error", errno_text(e)},
                 {"segment_bytes", static_cast<std::int64_t>(capacity)}});
    }
    return collab::fail(Code::Unavailable,
                        "the server's disk is full (journal " + options_.dir.string() +
                            "): " + errno_text(e) + "; the batch was not accepted",
                        1'000);
  }
  std::string header(kMagic, sizeof kMagic);
  put<std::uint64_t>(header, seg->number);
  put<std::uint64_t>(header, kHeader);  // durable end: nothing yet
  int err = 0;
  if (!pwrite_all(seg->fd, header, 0, err) || ::fdatasync(seg->fd) != 0) {
    if (err == 0) err = errno;
    ::close(seg->fd);
    seg->fd = -1;
    ::unlink(seg->path.c_str());
    ++stats_.refused;
    return collab::fail(Code::Unavailable, "cannot start a journal segment: " + errno_text(err),
                        1'000);
  }
  sync_dir(options_.dir);
  if (no_space_since_) {
    log::info("journal: space for segments again; batches are taken",
              {{"dir", options_.dir.string()}});
    no_space_since_.reset();
  }
  ++next_number_;
  if (current_) older_.push_back(std::move(current_));
  current_ = std::move(seg);
  collect();
  return {};
}

collab::Error Journal::append(LoggedBatch batch, std::function<void()> on_durable) {
  auto bytes = encode(batch);
  std::lock_guard lock(mu_);
  if (!current_ || current_->used + bytes.size() > current_->capacity) {
    if (auto e = rotate(bytes.size())) return e;
  }
  auto& top = current_->rooms[batch.room];
  top = std::max(top, batch.seq);
  const auto offset = current_->used;
  current_->used += bytes.size();
  pending_.push_back(Pending{current_, offset, std::move(bytes), std::move(on_durable)});
  cv_.notify_one();
  return {};
}

void Journal::after_durable(std::function<void()> fn) {
  std::lock_guard lock(mu_);
  pending_.push_back(Pending{nullptr, 0, {}, std::move(fn)});
  cv_.notify_one();
}

void Journal::stored(const std::string& room, std::uint64_t seq) {
  std::lock_guard lock(mu_);
  auto& s = stored_[room];
  s = std::max(s, seq);
  collect();
}

void Journal::collect() {
  std::erase_if(older_, [&](const std::shared_ptr<Segment>& seg) {
    for (const auto& [room, top] : seg->rooms) {
      auto it = stored_.find(room);
      if (it == stored_.end() || it->second < top) return false;
    }
    // Written records are on disk (every group syncs before the next); in interval mode
    // the writer still holds a reference until its sync, so only the name goes here.
    if (::unlink(seg->path.c_str()) != 0 && errno != ENOENT) {
      log::warn("journal: cannot delete a stored segment",
                {{"file", seg->path.string()}, {"error", errno_text(errno)}});
      return false;
    }
    return true;
  });
}

// Interval mode acks before the fsync: what the kernel had not written is lost if the
// machine (not only Kiln) went down. The boot id tells the two apart; the mode that wrote
// the journal (not today's) says whether it matters. The file holds "<boot id> <mode>".
void Journal::check_boot(bool had_segments) {
  std::string boot = options_.boot_id;
  if (boot.empty() && read_file("/proc/sys/kernel/random/boot_id", boot)) {
    while (!boot.empty() && (boot.back() == '\n' || boot.back() == ' ')) boot.pop_back();
  }
  const std::string mode = options_.fsync == Fsync::Interval ? "interval" : "group";
  const auto path = options_.dir / "boot_id";
  std::string before;
  const bool known = read_file(path, before);
  const auto space = before.find(' ');
  const std::string before_boot = before.substr(0, space);
  const std::string before_mode = space == std::string::npos ? mode : before.substr(space + 1);
  if (had_segments && before_mode == "interval" && (!known || before_boot != boot)) {
    stats_.machine_restarted = true;
    log::warn("journal: the machine restarted since the journal was written in interval mode",
              {{"dir", options_.dir.string()}});
  }
  if (known && before == boot + " " + mode) return;
  // Not fatal: on a full disk Kiln still starts (and refuses batches until there is space).
  if (!write_small_file(path, boot + " " + mode))
    log::warn("journal: cannot record the boot id", {{"file", path.string()}});
}

// Uncertainty outlives the start that found it: a room loaded in a later run could hold
// the same lost acks. While <dir>/uncertain exists, every room starts a new epoch when
// loaded; an operator removes it once every room has been stored since (persistence.md).
void Journal::check_uncertain() {
  const auto path = options_.dir / "uncertain";
  if (stats_.machine_restarted || stats_.damaged > 0) {
    std::string text;
    read_file(path, text);
    const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    text += std::string(when) +
            (stats_.damaged > 0 ? " damaged segments\n" : " machine restart in interval mode\n");
    if (!write_small_file(path, text))
      log::error(
          "journal: cannot record that the history is uncertain; rooms loaded after the "
          "next start may keep an epoch whose acks were lost",
          {{"file", path.string()}});
  }
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  stats_.history_uncertain = true;
  log::warn(
      "journal: the history is uncertain (acknowledged batches may have been lost): "
      "every room starts a new epoch when it is loaded, and clients resynchronise. "
      "Remove the file once every room has been stored since.",
      {{"file", path.string()}});
}

// A damaged segment's readable records are replayed, but the history is uncertain: every
// room starts a new epoch (clients resync). The file keeps a second name, <name>.damaged,
// for inspection; the segment itself goes the usual way once its rooms are stored.
void Journal::set_aside(const fs::path& path, const std::string& why) {
  ++stats_.damaged;
  auto aside = path;
  aside += ".damaged";
  std::error_code ec;
  if (!fs::exists(aside, ec)) fs::create_hard_link(path, aside, ec);
  log::error(
      "journal: a damaged segment; acknowledged batches may be lost, so every room "
      "starts a new epoch and clients resynchronise",
      {{"file", path.string()}, {"copy", aside.string()}, {"why", why}});
}

std::optional<std::string> Journal::problem() const {
  std::lock_guard lock(mu_);
  if (!no_space_since_) return std::nullopt;
  const auto t = std::chrono::system_clock::to_time_t(*no_space_since_);
  char when[32];
  std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return "no space for a journal segment since " + std::string(when) +
         ": editing batches are refused";
}

Stats Journal::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.segments = older_.size() + (current_ ? 1 : 0);
  return s;
}

void Journal::fatal(const std::string& what) {
  if (options_.on_fatal) {
    options_.on_fatal(what);
    return;
  }
  log::error(
      "journal: a write failed; stopping so that no batch is acknowledged that is not "
      "on disk (a restart replays the journal)",
      {{"error", what}, {"dir", options_.dir.string()}});
  std::_Exit(70);
}

void Journal::run() {
  std::set<std::shared_ptr<Segment>> unsynced;  // interval mode
  auto last_sync = std::chrono::steady_clock::now();
  auto sync_all = [&]() -> bool {
    for (const auto& seg : unsynced) {
      if (::fdatasync(seg->fd) != 0) {
        fatal("fdatasync " + seg->path.string() + ": " + errno_text(errno));
        return false;
      }
      seg->synced_end = seg->written_end;
    }
    {
      std::lock_guard lock(mu_);
      stats_.syncs += unsynced.size();
    }
    unsynced.clear();
    last_sync = std::chrono::steady_clock::now();
    return true;
  };
  for (;;) {
    std::vector<Pending> group;
    bool stopping = false;
    {
      std::unique_lock lock(mu_);
      if (options_.fsync == Fsync::Interval) {
        cv_.wait_until(lock, last_sync + options_.interval,
                       [&] { return stop_ || !pending_.empty(); });
      } else {
        cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
      }
      group.swap(pending_);
      stopping = stop_ && group.empty();
    }
    std::set<std::shared_ptr<Segment>> touched;
    std::uint64_t records = 0;
    std::uint64_t bytes = 0;
    for (const auto& p : group) {
      if (!p.segment) continue;
      int err = 0;
      auto& seg = *p.segment;
      // The header says how far the segment was durable before this group (fsync'd already,
      // so true whenever it reaches the disk): start-up tells acked records that went missing
      // from a torn write that was never acked.
      if (seg.synced_end > seg.claimed_end) {
        std::string end;
        put<std::uint64_t>(end, seg.synced_end);
        if (!pwrite_all(seg.fd, end, 16, err)) {
          fatal("write " + seg.path.string() + ": " + errno_text(err));
          return;
        }
        seg.claimed_end = seg.synced_end;
      }
      if (!pwrite_all(seg.fd, p.bytes, p.offset, err)) {
        fatal("write " + seg.path.string() + ": " + errno_text(err));
        return;
      }
      seg.written_end = std::max<std::uint64_t>(seg.written_end, p.offset + p.bytes.size());
      touched.insert(p.segment);
      ++records;
      bytes += p.bytes.size();
    }
    if (options_.fsync == Fsync::Group) {
      unsynced.insert(touched.begin(), touched.end());
      if (!sync_all()) return;
    } else {
      unsynced.insert(touched.begin(), touched.end());
      if ((stopping || std::chrono::steady_clock::now() - last_sync >= options_.interval) &&
          !sync_all())
        return;
    }
    {
      std::lock_guard lock(mu_);
      stats_.records += records;
      stats_.bytes += bytes;
    }
    for (auto& p : group) {
      if (p.done) p.done();
    }
    if (stopping) return;
  }
}

}  // namespace kiln::journal
