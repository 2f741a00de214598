// The rooms module: the room engine for the gateway and the persister (see modules.hpp).
#include "store/rooms.hpp"
#include "app/durability.hpp"
#include "app/modules.hpp"
#include "engines/memory/memory_engine.hpp"
#include "engines/redis/redis_engine.hpp"
#include "journal/journal.hpp"
#include "platform/ids.hpp"
#include "platform/log.hpp"

namespace kiln::app {
namespace {

// The Redis engine's settings (room.*, redis.*) and its metrics.
engines::RedisEngineOptions redis_engine_options(Node& node, const collab::EngineLimits& limits) {
  const auto& cfg = node.cfg;
  auto& registry = node.registry;
  engines::RedisEngineOptions eo;
  eo.prefix = cfg.str("redis.prefix");
  eo.node = node.id;
  eo.limits = limits;
  eo.presence_ttl = std::chrono::milliseconds(cfg.integer("room.presence_ttl_ms"));
  eo.snapshot_every = static_cast<std::size_t>(cfg.integer("room.snapshot_every"));
  eo.connection = node.redis_options;
  eo.evict_after = std::chrono::milliseconds(cfg.integer("room.evict_after_ms"));
  eo.ack_replicas = static_cast<int>(cfg.integer("redis.ack_replicas"));
  eo.wait_timeout = std::chrono::milliseconds(cfg.integer("redis.wait_timeout_ms"));
  auto& wait_timeouts = registry
                            .counter("kiln_redis_wait_timeouts_total",
                                     "Batches acknowledged although the replicas did not confirm "
                                     "them within redis.wait_timeout_ms.")
                            .get();
  eo.on_wait_timeout = [&wait_timeouts] { wait_timeouts.inc(); };
  auto& groups = registry
                     .histogram("kiln_room_append_group_batches",
                                "Batches appended to a room by one script call (group commit).", {},
                                {1, 2, 4, 8, 16, 32, 64, 128, 256})
                     .get();
  eo.on_group = [&groups](std::size_t n) { groups.observe(static_cast<double>(n)); };
  auto& conflicts = registry
                        .counter("kiln_room_append_conflicts_total",
                                 "Appends that found another node's batches first (the group "
                                 "was validated again).")
                        .get();
  eo.on_conflict = [&conflicts] { conflicts.inc(); };
  auto& busy = registry
                   .counter("kiln_room_busy_refusals_total",
                            "Batches refused because room.max_queued batches were waiting on "
                            "this node (nack unavailable with after_ms).")
                   .get();
  eo.on_busy = [&busy] { busy.inc(); };
  auto& resets = registry
                     .counter("kiln_room_epoch_resets_total",
                              "Rooms given a new epoch because Redis had fewer batches than "
                              "this node had applied (history lost with a Redis primary).")
                     .get();
  eo.on_history_lost = [&resets] { resets.inc(); };
  eo.max_queued = static_cast<std::size_t>(cfg.integer("room.max_queued"));
  return eo;
}

}  // namespace

RoomsModule::RoomsModule(Node& node) : node_(node) {
  const auto& cfg = node.cfg;
  collab::EngineLimits limits;
  limits.log_retention = static_cast<std::size_t>(cfg.integer("room.log_retention"));
  limits.max_entities = static_cast<std::size_t>(cfg.integer("room.max_entities"));
  limits.max_members = static_cast<std::size_t>(cfg.integer("room.max_members"));
  if (node.redis) {
    auto re = std::make_unique<engines::RedisRoomEngine>(*node.runtime, node.redis,
                                                         redis_engine_options(node, limits),
                                                         [] { return ids::random_hex(8); });
    redis_engine_ = re.get();
    persist_source_ = re.get();
    engine_ = std::move(re);
  } else {
    auto me =
        std::make_unique<engines::MemoryRoomEngine>(limits, [] { return ids::random_hex(8); });
    memory_engine_ = me.get();
    persist_source_ = me.get();
    engine_ = std::move(me);
  }

  // Rooms the engine does not hold start from their latest stored snapshot, read on the
  // database threads (never the event loop's).
  if (node.db && node.db_threads) {
    collab::RoomLoader loader = [&node](const std::string& room, auto done) {
      auto task = [&node, room, done] {
        try {
          auto s = store::Rooms(*node.db).latest_snapshot(room);
          done(s ? std::optional(collab::StoredRoom{s->seq, std::move(s->body), s->epoch})
                 : std::nullopt,
               "");
        } catch (const std::exception& e) {
          done(std::nullopt, e.what());
        }
      };
      if (!node.db_threads->post(task)) done(std::nullopt, "too many rooms loading at once");
    };
    if (redis_engine_) redis_engine_->set_loader(loader);
    if (memory_engine_) memory_engine_->set_loader(loader);
  }

  // Durable acks on the memory engine: only where a persister stores rooms (serve), which
  // is what lets the journal be truncated.
  if (memory_engine_ && node.db && node.roles.persist) {
    const auto dir = node.data_dir / "journal";
    if (!cfg.boolean("journal.enabled")) {
      warn_unread_journal(dir);
    } else {
      try {
        journal_ = open_journal(cfg, dir, node.registry, *memory_engine_);
      } catch (const std::exception& e) {
        log::error("journal unusable", {{"error", e.what()}});
        throw StartupError(1, std::string(e.what()) + " (settings journal.*, data.dir)");
      }
      node.health.add_check(
          "journal", [j = journal_.get()] { return j->problem(); }, false);
    }
  }
}

RoomsModule::~RoomsModule() = default;

void RoomsModule::start(http::Server&) {
  if (!redis_engine_) return;
  // Presence refresh and reaping on a fixed period.
  const auto period = std::chrono::milliseconds(
      std::max<std::int64_t>(node_.cfg.integer("room.presence_ttl_ms") / 3, 100));
  node_.every(period, period, [e = redis_engine_] { e->tick(); });
}

void RoomsModule::stop(bool) {
  node_.db_threads.reset();  // finishes loads in flight before the engine goes
  if (redis_engine_) redis_engine_->close();
}

}  // namespace kiln::app
