// The persist module: the write-behind persister (worker role, serve).
#include "app/modules.hpp"
#include "app/settings.hpp"
#include "persist/persister.hpp"

namespace kiln::app {
namespace {

class PersistModule final : public Module {
 public:
  PersistModule(Node& node, RoomsModule& rooms) : in_memory_(rooms.in_memory()) {
    const auto& cfg = node.cfg;
    persist::PersisterOptions po;
    po.holder = node.id;
    po.interval = std::chrono::milliseconds(cfg.integer("persist.interval_ms"));
    po.lease = std::chrono::milliseconds(cfg.integer("persist.lease_ms"));
    po.keep = static_cast<std::size_t>(cfg.integer("persist.keep_snapshots"));
    po.reconcile_every = static_cast<int>(cfg.integer("persist.reconcile_every"));
    po.max_rooms_per_pass = static_cast<std::size_t>(cfg.integer("persist.max_rooms_per_pass"));
    persister_ =
        std::make_unique<persist::Persister>(*node.db, *rooms.persist_source(), po, &node.registry);
    // The worker exists to persist: failing passes make it not ready. In serve, editing
    // goes on meanwhile: reported, status "degraded".
    node.health.add_check(
        "persistence", [p = persister_.get()] { return p->problem(); }, node.role == "worker");
  }

  void start(http::Server&) override { persister_->start(); }
  // Every dirty room stored one last time once the sessions are gone (the Redis engine
  // needs the loop to answer, which still runs).
  void finish() override {
    if (!persister_) return;
    persister_->stop(true);
    flushed_ = true;
  }
  void stop(bool) override {
    // Stopped without a drain (a second signal): the memory engine can still be flushed
    // (it needs no event loop); the Redis engine keeps its rooms in Redis anyway.
    if (persister_ && !flushed_) persister_->stop(in_memory_);
    persister_.reset();
  }

 private:
  bool in_memory_;
  bool flushed_ = false;
  std::unique_ptr<persist::Persister> persister_;
};

}  // namespace

std::unique_ptr<Module> make_persist(Node& node, RoomsModule& rooms) {
  return std::make_unique<PersistModule>(node, rooms);
}

void add_persist_settings(config::Schema& s) {
  using namespace setting;
  s.add(integer("persist.interval_ms", 30'000, 100, 86'400'000,
                "Write-behind: every dirty room's snapshot reaches the database at most once "
                "per interval (the `worker` role, and `kiln serve`)."));
  s.add(integer("persist.lease_ms", 90'000, 1'000, 86'400'000,
                "A worker keeps the rooms it stores for this long after each store; another "
                "worker takes a room over after its lease expires. Longer than the interval."));
  s.add(integer("persist.keep_snapshots", 5, 1, 10'000, "Snapshots kept per room (newest)."));
  s.add(integer("persist.reconcile_every", 10, 0, 1'000'000,
                "Every N passes, compare every room in the engine with the stored seq, to store "
                "rooms whose dirty mark was lost. 0: never."));
  s.add(integer("persist.max_rooms_per_pass", 10'000, 1, 10'000'000,
                "Dirty rooms handled per pass at most (the rest wait for the next)."));
}

}  // namespace kiln::app
