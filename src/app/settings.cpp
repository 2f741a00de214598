#include "app/settings.hpp"

namespace kiln::app {

using config::Setting;
using config::Type;

namespace {

Setting integer(std::string key, std::int64_t def, std::int64_t min, std::int64_t max,
                std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Int;
  s.default_value = std::to_string(def);
  s.min = min;
  s.max = max;
  s.help = std::move(help);
  return s;
}

Setting text(std::string key, std::string def, std::string help, bool allow_empty = true) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::String;
  s.default_value = std::move(def);
  s.help = std::move(help);
  s.allow_empty = allow_empty;
  return s;
}

Setting choice(std::string key, std::string def, std::vector<std::string> choices,
               std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Enum;
  s.default_value = std::move(def);
  s.choices = std::move(choices);
  s.help = std::move(help);
  return s;
}

Setting flag(std::string key, bool def, std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Bool;
  s.default_value = def ? "true" : "false";
  s.help = std::move(help);
  return s;
}

Setting endpoint(std::string key, std::string def, std::string help) {
  Setting s;
  s.key = std::move(key);
  s.type = Type::Endpoint;
  s.default_value = std::move(def);
  s.help = std::move(help);
  return s;
}

config::Schema build() {
  constexpr std::int64_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;
  config::Schema s;
  s.add(text("node.id", "",
             "This node's name in logs, metrics and the protocol. Empty: the host name "
             "plus a random suffix, new at each start."));
  s.add(text("data.dir", "./kiln-data",
             "Directory for embedded state (created if missing). Relative paths are relative "
             "to the working directory.",
             /*allow_empty=*/false));
  s.add(endpoint("http.listen", "127.0.0.1:7700",
                 "Address the HTTP server listens on. Loopback by default: expose it "
                 "deliberately (`0.0.0.0:7700`)."));
  s.add(integer("http.max_header_bytes", 16 * KiB, 1 * KiB, 1 * MiB,
                "Largest request line plus headers; larger requests get 431."));
  s.add(integer("http.max_body_bytes", 1 * MiB, 0, 1 * GiB,
                "Largest request body; larger requests get 413. Uploads never pass through "
                "Kiln's HTTP server, so this stays small."));
  s.add(integer("http.request_timeout_ms", 30'000, 100, 600'000,
                "Time allowed to receive one whole request, and to send its response; a "
                "request that takes longer gets 408."));
  s.add(integer("http.idle_timeout_ms", 60'000, 100, 3'600'000,
                "A keep-alive connection with no request for this long is closed."));
  s.add(integer("http.max_connections", 20'000, 1, 1'000'000,
                "Open connections at most; beyond it new connections get 503 and are closed."));
  s.add(flag("http.access_log", true, "Log one line per HTTP request (path without query)."));
  s.add(text("http.cors_origins", "",
             "Comma-separated origins whose pages may call the API from a browser "
             "(`https://editor.example.com`; `*`: any). Empty: no CORS (same-origin pages and "
             "non-browser clients only)."));
  s.add(choice("log.level", "info", {"trace", "debug", "info", "warn", "error"},
               "Lowest level written to the log."));
  s.add(choice("log.format", "auto", {"auto", "json", "text"},
               "`json`: one JSON object per line (for collectors); `text`: for a terminal; "
               "`auto`: text when stderr is a terminal, else json."));
  s.add(integer("runtime.threads", 0, 0, 256, "Event-loop threads; 0 means one per CPU core."));
  Setting secret = text("auth.jwt_secret", "",
                        "HS256 secret for user tokens (at least 32 bytes). Empty: a random "
                        "secret is generated once and kept in `<data.dir>/jwt-secret` (mode 0600), "
                        "which `kiln token` reads too.");
  secret.secret = true;
  secret.default_shown = "generated, in <data.dir>/jwt-secret";
  s.add(secret);
  s.add(text("auth.jwt_public_key_file", "",
             "PEM RSA public key file: when set, tokens must be RS256 signed by its private key "
             "and HS256 tokens are refused."));
  s.add(integer("auth.clock_skew_s", 30, 0, 600,
                "Leeway for token `exp` and `nbf` against this node's clock."));
  s.add(integer("gateway.hello_timeout_ms", 10'000, 100, 120'000,
                "A connection that has not sent a valid `hello` by then is closed with 4001."));
  s.add(integer("gateway.heartbeat_ms", 15'000, 1'000, 300'000,
                "WebSocket ping interval (told to clients in `welcome`); a peer silent for "
                "twice this long is dropped."));
  s.add(integer("gateway.access_ttl_ms", 5'000, 100, 600'000,
                "Joins are decided from the database's live membership, cached per project for "
                "this long; every project in use is read again this often, so an access change "
                "the access bus lost still takes effect within it."));
  s.add(integer("gateway.access_stale_ms", 300'000, 0, 86'400'000,
                "While the database does not answer, joins are decided from a cached entry up "
                "to this old; past it (or with none) a join gets `nack unavailable`."));
  s.add(
      integer("gateway.tick_ms", 50, 5, 1'000,
              "Ephemeral updates (cursors, drags) are coalesced and sent at most once per tick."));
  s.add(integer("gateway.max_frame_bytes", 256 * KiB, 1 * KiB, 16 * MiB,
                "Largest client frame; larger ones close the connection with 4009."));
  s.add(integer("gateway.max_ops_per_batch", 1'000, 1, 100'000,
                "Ops in one `op` request; more gets `nack too_large`."));
  s.add(integer("gateway.max_rooms_per_connection", 16, 1, 1'000,
                "Rooms one connection may be in at once; more gets `nack too_large`."));
  s.add(integer("gateway.max_sessions", 20'000, 1, 1'000'000,
                "WebSocket sessions on this node; beyond it upgrades get 503."));
  s.add(integer("gateway.max_queue_bytes", 4 * MiB, 64 * KiB, 1 * GiB,
                "Bytes waiting to be sent to one client; a client that falls further behind is "
                "closed with 4008."));
  s.add(integer("gateway.ops_per_second", 20, 1, 100'000,
                "Durable batches per second per connection (burst twice that); beyond it "
                "`nack rate_limited`."));
  s.add(integer("gateway.eph_per_second", 120, 1, 100'000,
                "Ephemeral updates per second per connection (burst twice that); beyond it they "
                "are dropped and counted."));
  s.add(integer("gateway.messages_per_second", 400, 1, 1'000'000,
                "All frames per second per connection (burst twice that); beyond it the "
                "connection is closed with 4029."));
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
  Setting db_url =
      text("database.url", "",
           "The database (the primary): `postgresql://user:password@host:port/db` (libpq URL; "
           "through PgBouncer in transaction mode is fine) or `sqlite:PATH`. Empty: SQLite at "
           "`<data.dir>/kiln.db`.");
  db_url.secret = true;
  db_url.default_shown = "sqlite:<data.dir>/kiln.db";
  s.add(db_url);
  Setting read_urls = text("database.read_urls", "",
                           "Comma-separated PostgreSQL replica URLs for list/get reads. Empty: "
                           "every read goes to database.url.");
  read_urls.secret = true;
  s.add(read_urls);
  s.add(integer("database.pool_size", 8, 1, 1'000,
                "Connections per database (the primary, and each replica) per process."));
  s.add(integer("database.pool_timeout_ms", 5'000, 10, 600'000,
                "How long a query waits for a free pooled connection before failing."));
  s.add(integer("database.connect_timeout_ms", 5'000, 100, 600'000,
                "Connecting to the database fails after this long."));
  s.add(integer("database.statement_timeout_ms", 10'000, 10, 3'600'000,
                "A statement running longer is cancelled (a cancel request, PgBouncer-safe) "
                "and fails."));
  s.add(integer("database.read_your_writes_wait_ms", 500, 0, 60'000,
                "A read that must see the caller's own write waits at most this long for a "
                "replica to replay it, then reads the primary."));
  s.add(integer("database.replica_retry_ms", 5'000, 100, 3'600'000,
                "A replica that failed is skipped for this long (reads go elsewhere)."));
  s.add(flag("database.migrate_on_start", true,
             "Apply pending schema migrations at start-up (safe with several nodes starting at "
             "once). Off: run `kiln migrate` yourself; a node finding an older schema refuses "
             "to start."));
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
  Setting key = text("api.service_key", "",
                     "The key the studio's backend sends (`Authorization: Bearer <key>`) to "
                     "mint user tokens and manage projects for users; at least 32 bytes. Empty: "
                     "generated once into `<data.dir>/service-key` (mode 0600).");
  key.secret = true;
  key.default_shown = "generated, in <data.dir>/service-key";
  s.add(key);
  s.add(integer("api.token_ttl_s", 3'600, 60, 30 * 86'400,
                "Lifetime of tokens minted by `POST /v1/tokens` when the request names none."));
  s.add(integer("api.token_max_ttl_s", 7 * 86'400, 60, 365 * 86'400,
                "Longest lifetime `POST /v1/tokens` accepts."));
  s.add(integer("api.user_requests_per_second", 20, 1, 1'000'000,
                "API requests per second per user (burst twice that); beyond it 429 with "
                "Retry-After."));
  s.add(integer("api.service_requests_per_second", 200, 1, 1'000'000,
                "API requests per second for the service key (burst twice that)."));
  s.add(integer("api.page_size", 50, 1, 1'000, "Items per page when a list names no `limit`."));
  s.add(integer("api.max_page_size", 200, 1, 10'000, "Largest `limit` a list accepts."));
  s.add(integer("api.threads", 8, 1, 256,
                "Threads running API handlers (they block on the database)."));
  s.add(integer("api.max_queued", 1'000, 1, 1'000'000,
                "API requests waiting for a thread at most; beyond it 503 with Retry-After."));
  s.add(endpoint("objects.listen", "127.0.0.1:7701",
                 "Address of the embedded S3-compatible object store (`kiln objects`, and "
                 "`kiln serve`)."));
  s.add(text("objects.dir", "",
             "Where the object store keeps its data. Empty: `<data.dir>/objects`."));
  s.add(text("objects.region", "us-east-1", "The region clients sign for (SigV4 scope).",
             /*allow_empty=*/false));
  s.add(text("objects.access_key", "kiln", "The access key id clients sign with.",
             /*allow_empty=*/false));
  Setting osecret = text("objects.secret_key", "",
                         "The secret key clients sign with (at least 32 bytes). Empty: generated "
                         "once into `<data.dir>/objects-secret` (mode 0600).");
  osecret.secret = true;
  osecret.default_shown = "generated, in <data.dir>/objects-secret";
  s.add(osecret);
  s.add(text("objects.buckets", "kiln", "Comma-separated buckets created at start."));
  s.add(text("objects.cors_origins", "",
             "Comma-separated origins allowed to call the store from a browser (`*`: any); "
             "responses then expose ETag. Empty: no CORS."));
  s.add(text("objects.virtual_host_domain", "localhost",
             "Virtual-hosted-style requests: a Host of `<bucket>.<this domain>` names the bucket "
             "(`kiln.localhost:7701/key`). Empty: path-style only (`/bucket/key`)."));
  s.add(integer("objects.max_skew_s", 900, 1, 86'400,
                "Largest difference between a signed request's time and this node's clock."));
  s.add(text("storage.endpoint", "",
             "The S3-compatible object storage the API signs uploads for and calls "
             "(`http(s)://host[:port]`, path-style). Empty: the embedded store (objects.listen; in "
             "`kiln serve` the port it bound)."));
  s.add(text("storage.public_endpoint", "",
             "The storage endpoint as browsers and `kiln upload` reach it, named in presigned "
             "URLs. Empty: storage.endpoint."));
  s.add(text("storage.ca_file", "",
             "With an https:// storage endpoint: a PEM file of CAs to trust. Empty: the "
             "system's (SSL_CERT_FILE and SSL_CERT_DIR are honoured)."));
  s.add(text("storage.bucket", "kiln", "The bucket assets are stored in.", /*allow_empty=*/false));
  s.add(text("storage.region", "", "The region to sign for. Empty: objects.region."));
  s.add(text("storage.access_key", "", "The access key id. Empty: objects.access_key."));
  Setting ssecret = text("storage.secret_key", "",
                         "The secret key. Empty: the embedded store's (objects.secret_key).");
  ssecret.secret = true;
  s.add(ssecret);
  s.add(text("storage.cdn_base", "",
             "A CDN in front of the bucket (`https://cdn.example.com`): downloads are "
             "`<cdn_base>/<key>` URLs, cacheable forever (objects are never rewritten). Empty: "
             "presigned GETs."));
  constexpr std::int64_t kMiB = 1 << 20;
  s.add(integer("uploads.multipart_threshold_bytes", 100 * kMiB, 0, 5LL << 30,
                "Files larger than this upload in parts (multipart, resumable); smaller ones with "
                "one presigned PUT."));
  s.add(integer("uploads.part_size_bytes", 16 * kMiB, 5 * kMiB, 5LL << 30,
                "Part size of multipart uploads (grown for files that would need more than "
                "10,000 parts)."));
  s.add(integer("uploads.max_size_bytes", 64LL << 30, 1, 5LL << 40, "Largest file accepted."));
  s.add(integer("uploads.project_quota_bytes", 100LL << 30, 1, 1LL << 50,
                "Bytes a project may hold: its assets plus its open uploads."));
  s.add(text("uploads.content_types",
             "model/*,image/*,audio/*,video/*,font/*,text/plain,application/json,"
             "application/octet-stream,application/zip,application/gltf-buffer",
             "Comma-separated media types uploads may declare; `type/*` allows a family, "
             "`*/*` everything.",
             /*allow_empty=*/false));
  s.add(integer("uploads.url_ttl_s", 900, 10, 7 * 86'400,
                "Lifetime of presigned upload URLs (single PUTs and parts)."));
  s.add(integer("uploads.download_ttl_s", 3'600, 10, 7 * 86'400,
                "Lifetime of presigned download URLs."));
  s.add(integer("uploads.stale_after_s", 7 * 86'400, 1, 365 * 86'400,
                "Open uploads with no activity for this long are aborted (their parts removed)."));
  s.add(integer("uploads.sweep_interval_s", 600, 1, 86'400,
                "How often each API node looks for stale uploads."));
  s.add(integer("uploads.complete_threads", 2, 1, 256,
                "Threads completing uploads, apart from api.threads: a completion may read a "
                "whole object back to check its SHA-256."));
  s.add(integer("uploads.max_parts_per_request", 100, 1, 10'000,
                "Part URLs one request may ask for."));
  s.add(integer("shutdown.drain_ms", 10'000, 0, 3'600'000,
                "After SIGTERM or SIGINT: how long requests in progress may take to finish "
                "before their connections are cut."));
  return s;
}

}  // namespace

const config::Schema& schema() {
  static const config::Schema s = build();
  return s;
}

}  // namespace kiln::app
