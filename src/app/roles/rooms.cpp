// The rooms module: the room engine for the gateway and the persister (see modules.hpp).
#include "store/rooms.hpp"
#include "app/durability.hpp"
#include "app/modules.hpp"
#include "app/settings.hpp"
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

void add_rooms_settings(config::Schema& s) {
  using namespace setting;
  s.add(choice("room.engine", "memory", {"memory", "redis"},
               "Where room state lives: `memory` (this process; one node) or `redis` (shared "
               "by every gateway node; see the redis.* settings)."));
  s.add(choice("redis.mode", "standalone", {"standalone", "cluster"},
               "`standalone`: one Redis server (or a proxy); `cluster`: Redis Cluster, "
               "`redis.addresses` are seed nodes."));
  s.add(text("redis.addresses", "127.0.0.1:6379",
             "Comma-separated host:port list: the server, or the Cluster's seed nodes.",
             /*allow_empty=*/false));
  s.add(text("redis.prefix", "kiln", "Prefix of every Redis key and channel Kiln uses.",
             /*allow_empty=*/false));
  s.add(integer("redis.command_timeout_ms", 5'000, 50, 600'000,
                "A Redis reply later than this drops the connection (it is rebuilt)."));
  s.add(integer("redis.ack_replicas", 0, 0, 16,
                "Ack durability. 0: a batch is acknowledged once the Redis primary has it (a "
                "primary failover can lose the latest ones; clients are then told to resync). "
                "N: acknowledged only after N replicas confirm it (WAIT N), which survives a "
                "failover to one of them. Use N only where the primaries have N replicas."));
  s.add(integer("redis.wait_timeout_ms", 1'000, 10, 60'000,
                "With redis.ack_replicas > 0: how long to wait for the replicas; after that the "
                "ack is sent anyway, logged and counted (kiln_redis_wait_timeouts_total)."));
  s.add(integer("room.presence_ttl_ms", 30'000, 1'000, 3'600'000,
                "With the redis engine: members of a node that stopped refreshing them for this "
                "long are removed and the room told (`presence` left)."));
  s.add(integer("room.evict_after_ms", 30'000, 0, 86'400'000,
                "With the redis engine: a room with no member on this node is dropped from it "
                "(its copy and subscription) after this long."));
  s.add(integer("room.snapshot_every", 500, 1, 1'000'000,
                "With the redis engine: batches between snapshots stored in Redis (the log is "
                "trimmed behind them, keeping room.log_retention for resume)."));
  s.add(integer("room.log_retention", 10'000, 1, 10'000'000,
                "Accepted batches kept per room for resume; older `since` gets a snapshot."));
  s.add(integer("room.max_queued", 10'000, 1, 1'000'000,
                "With the redis engine: batches waiting per room on one node for their append; "
                "beyond it a batch gets `nack unavailable` with `after_ms` (the room takes "
                "fewer batches than it receives)."));
  s.add(flag("journal.enabled", true,
             "With the memory engine (kiln serve): every accepted batch reaches an append-only "
             "log in <data.dir>/journal before it is acknowledged or shown to anyone; start-up "
             "replays it, so an ack survives a crash. Off: acks are provisional until the "
             "persister stores the room (every persist.interval_ms)."));
  s.add(choice("journal.fsync", "group", {"group", "interval"},
               "group: one fsync per group of batches (those accepted while the previous fsync "
               "ran) before their acks: an ack survives a power loss. interval: acks once the "
               "batch is written (it survives a crash of Kiln, not of the machine), fsync every "
               "journal.fsync_interval_ms."));
  s.add(integer("journal.fsync_interval_ms", 100, 1, 60'000,
                "With journal.fsync interval: time between fsyncs."));
  s.add(integer("journal.segment_bytes", 16 << 20, 1 << 16, 1 << 30,
                "Journal segment size; space is reserved a segment at a time, so a full disk "
                "refuses batches (nack unavailable) before accepting them."));
  s.add(integer("room.max_entities", 100'000, 1, 10'000'000,
                "Entities per scene; creates beyond it get `nack too_large`."));
  s.add(integer("room.max_members", 200, 1, 100'000,
                "Members per room; joins beyond it get `nack too_large`."));
}

}  // namespace kiln::app
