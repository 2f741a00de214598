#include "persist/persister.hpp"

#include "platform/log.hpp"
#include "platform/metrics.hpp"

#include <ctime>
#include <unordered_set>

namespace kiln::persist {
namespace {

std::string iso_now() {
  const auto t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

const char* const kResults[] = {"stored",     "not_newer", "leased_elsewhere",
                                "lease_lost", "gone",      "failed"};

// The database is down or overloaded: the rest of the pass would fail the same way.
bool database_down(const sql::Error& e) {
  return e.temporary();
}

}  // namespace

struct Persister::Metrics {
  explicit Metrics(metrics::Registry& reg)
      : rooms(reg.counter("kiln_persist_rooms_total",
                          "Rooms the persister handled, by result: stored (a snapshot written), "
                          "not_newer, leased_elsewhere (another worker's), lease_lost, gone, "
                          "failed (left dirty for the next pass).",
                          {"result"})),
        passes(reg.counter("kiln_persist_passes_total", "Persister passes, by result (ok, failed).",
                           {"result"})),
        reconciled(reg.counter("kiln_persist_reconciled_rooms_total",
                               "Rooms found newer than stored without a dirty mark (a lost mark).")
                       .get()),
        dirty(reg.gauge("kiln_persist_dirty_rooms", "Rooms to store at the last pass.").get()),
        database_up(reg.gauge("kiln_persist_database_up",
                              "0 when the persister's last pass could not reach the database.")
                        .get()),
        last_success(reg.gauge("kiln_persist_last_success_timestamp_seconds",
                               "Unix time of the last pass that left no room dirty by failure.")
                         .get()),
        seconds(reg.histogram("kiln_persist_pass_seconds", "Duration of persister passes.", {},
                              metrics::latency_buckets())
                    .get()) {
    for (const char* r : kResults) rooms.with({r});
    passes.with({"ok"});
    passes.with({"failed"});
    database_up.set(1);
  }
  metrics::Family<metrics::Counter>& rooms;
  metrics::Family<metrics::Counter>& passes;
  metrics::Counter& reconciled;
  metrics::Gauge& dirty;
  metrics::Gauge& database_up;
  metrics::Gauge& last_success;
  metrics::Histogram& seconds;
};

Persister::Persister(store::Database& store, collab::PersistSource& source,
                     PersisterOptions options, metrics::Registry* registry)
    : rooms_(store), source_(source), options_(std::move(options)) {
  if (registry) metrics_ = std::make_unique<Metrics>(*registry);
}

Persister::~Persister() {
  stop(false);
}

void Persister::start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable() || stopped_) return;
  thread_ = std::thread([this] { loop(); });
}

void Persister::stop(bool final_flush) {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (final_flush) {
    auto r = pass(false);
    log::info("persister: final flush",
              {{"stored", static_cast<std::int64_t>(r.stored)},
               {"failed", static_cast<std::int64_t>(r.failed)},
               {"leased_elsewhere", static_cast<std::int64_t>(r.leased_elsewhere)}});
  }
}

void Persister::loop() {
  std::size_t n = 0;
  auto next = std::chrono::steady_clock::now() + options_.interval;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      if (cv_.wait_until(lock, next, [&] { return stopping_; })) return;
    }
    ++n;
    const bool reconcile =
        options_.reconcile_every > 0 && n % static_cast<std::size_t>(options_.reconcile_every) == 0;
    pass(reconcile);
    // A fixed rhythm; a pass that overran skips to the next slot rather than bunching up.
    next += options_.interval;
    const auto now = std::chrono::steady_clock::now();
    while (next <= now) next += options_.interval;
  }
}

void Persister::store_room(const std::string& room, PassReport& report) {
  if (!rooms_.acquire_lease(room, options_.holder, options_.lease)) {
    ++report.leased_elsewhere;
    return;
  }
  auto read = source_.read_room(room);
  if (!read) return source_failed(read.error(), report);
  auto& state = *read;
  if (!state) {
    // Evicted or deleted: nothing to store, and the mark would only linger.
    ++report.gone;
    // Above any seq (exact in a double score). Should the clear fail, the next pass finds
    // the room gone again.
    if (auto cleared = source_.mark_stored(room, UINT64_MAX >> 11); !cleared)
      source_failed(cleared.error(), report);
    return;
  }
  store::RoomSnapshot snap{room, state->seq, state->epoch, std::move(state->snapshot), 0};
  switch (rooms_.save_snapshot(snap, options_.holder, options_.lease, options_.keep)) {
    case store::SaveResult::Stored:
      ++report.stored;
      break;
    case store::SaveResult::NotNewer:
      ++report.not_newer;
      break;
    case store::SaveResult::LeaseLost:
      ++report.lease_lost;
      return;
  }
  // Stored: a mark that fails to clear only makes the next pass store the room again
  // (NotNewer), which is harmless; it is still reported.
  if (auto cleared = source_.mark_stored(room, snap.seq); !cleared)
    source_failed(cleared.error(), report);
}

void Persister::source_failed(const collab::SourceError& e, PassReport& report) {
  ++report.failed;
  if (report.error.empty()) report.error = e.detail;
}

PassReport Persister::pass(bool reconcile) {
  std::lock_guard pass_lock(pass_mu_);
  const auto started = std::chrono::steady_clock::now();
  PassReport report;
  std::vector<std::string> rooms;
  try {
    auto dirty = source_.dirty_rooms(options_.max_rooms_per_pass);
    if (!dirty) {
      source_failed(dirty.error(), report);
    } else {
      for (auto& d : *dirty) rooms.push_back(d.room);
    }
    auto all = reconcile ? source_.all_rooms() : std::vector<collab::RoomVersion>();
    if (!all) source_failed(all.error(), report);
    if (reconcile && all) {
      // Rooms newer in the engine than in the database, marked or not.
      std::unordered_set<std::string> marked(rooms.begin(), rooms.end());
      std::vector<std::string> names;
      for (const auto& r : *all) names.push_back(r.room);
      const auto stored = rooms_.stored_seqs(names);
      for (const auto& r : *all) {
        auto it = stored.find(r.room);
        const std::uint64_t have = it == stored.end() ? 0 : it->second;
        if (r.seq > have && marked.insert(r.room).second) {
          rooms.push_back(r.room);
          ++report.reconciled;
        }
      }
      if (report.reconciled > 0) {
        log::warn("persister: rooms newer than stored had no dirty mark",
                  {{"rooms", static_cast<std::int64_t>(report.reconciled)}});
      }
    }
  } catch (const sql::Error& e) {
    report.error = e.what();
    report.database_down = database_down(e);
    ++report.failed;
  } catch (const std::exception& e) {
    report.error = e.what();
    ++report.failed;
  }
  report.dirty = rooms.size();
  for (std::size_t i = 0; i < rooms.size(); ++i) {
    try {
      store_room(rooms[i], report);
    } catch (const sql::Error& e) {
      ++report.failed;
      if (report.error.empty()) report.error = e.what();
      if (database_down(e)) {
        report.database_down = true;
        report.failed += rooms.size() - i - 1;  // not tried: still dirty
        break;
      }
    } catch (const std::exception& e) {
      ++report.failed;
      if (report.error.empty()) report.error = e.what();
    }
  }
  record(report, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return report;
}

void Persister::record(const PassReport& r, double seconds) {
  const bool ok = r.failed == 0;
  {
    std::lock_guard lock(state_mu_);
    if (ok) {
      if (!failing_since_.empty()) log::info("persister: passes succeed again");
      failing_since_.clear();
      last_error_.clear();
    } else {
      if (failing_since_.empty()) failing_since_ = iso_now();
      last_error_ = r.error;
    }
    waiting_ = r.failed + r.leased_elsewhere + r.lease_lost;
  }
  if (!ok) {
    log::warn("persister: pass left rooms dirty",
              {{"failed", static_cast<std::int64_t>(r.failed)}, {"error", r.error}});
  }
  if (!metrics_) return;
  auto& m = *metrics_;
  const std::size_t counts[] = {r.stored,     r.not_newer, r.leased_elsewhere,
                                r.lease_lost, r.gone,      r.failed};
  for (std::size_t i = 0; i < std::size(kResults); ++i) m.rooms.with({kResults[i]}).inc(counts[i]);
  m.passes.with({ok ? "ok" : "failed"}).inc();
  m.reconciled.inc(r.reconciled);
  m.dirty.set(static_cast<double>(r.dirty));
  m.database_up.set(r.database_down ? 0 : 1);
  if (ok) {
    m.last_success.set(
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  }
  m.seconds.observe(seconds);
}

std::optional<std::string> Persister::problem() const {
  std::lock_guard lock(state_mu_);
  if (failing_since_.empty()) return std::nullopt;
  return "persisting fails since " + failing_since_ + " (" + std::to_string(waiting_) +
         " rooms waiting): " + last_error_;
}

}  // namespace kiln::persist
