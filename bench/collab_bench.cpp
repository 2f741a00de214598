// kiln-bench collab: a WebSocket load generator for the collaboration gateway (kiln.v1) and
// its peers: with --protocol socketio bench/peers/socketio-relay.js (the same traffic as
// socket.io 4 events over Engine.IO 4's WebSocket transport), with --protocol yjs
// bench/peers/yws-relay.mjs (y-websocket: ops as Yjs updates, cursors as awareness updates).
//
// Opens N clients in rooms of R, makes a share of them active (cursor updates at 60 Hz),
// has every client send one durable op every K seconds, and reports delivered messages
// per second, end-to-end latency p50/p99 for ops and cursors (timestamps from the shared
// monotonic clock travel inside the payloads), and the gateway's CPU and RSS (scraped from
// its /metrics). One line of JSON on stdout.
#include "auth/jwt.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

namespace {

struct Config {
  std::string host = "127.0.0.1";
  std::vector<std::uint16_t> ports{7700};  // clients are spread over these gateways
  std::string secret;
  int clients = 1000;
  int room_size = 20;
  double active = 0.1;
  double cursor_hz = 60;
  double op_interval_s = 10;
  double warmup_s = 5;
  double duration_s = 20;
  int connect_concurrency = 256;
  std::string project = "bench";
  std::string protocol = "kiln";  // or "socketio", "yjs"
  std::vector<int> pids;  // the servers' processes, on this machine: user and system CPU apart
};

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Stats {
  bool measuring = false;
  std::vector<double> op_ms;      // author's op -> a peer's ops frame
  std::vector<double> ack_ms;     // author's op -> its ack
  std::vector<double> cursor_ms;  // sender's eph -> a peer's eph batch
  std::uint64_t frames_in = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t eph_sent = 0;  // ephemeral updates sent while measuring
  std::uint64_t errors = 0;
  std::uint64_t nacks = 0;  // refused batches while measuring (also counted in errors)
  std::uint64_t closed = 0;
  int connected = 0;
  int joined = 0;
};

// Finds every `"ts":<number>` in a frame and records now - ts.
void record_ts(std::string_view frame, std::vector<double>& out, std::int64_t now) {
  std::size_t pos = 0;
  while ((pos = frame.find("\"ts\":", pos)) != std::string_view::npos) {
    pos += 5;
    std::int64_t ts = 0;
    auto [p, ec] = std::from_chars(frame.data() + pos, frame.data() + frame.size(), ts);
    if (ec == std::errc()) out.push_back(static_cast<double>(now - ts) / 1e6);
  }
}

// lib0's variable-length unsigned integer (7 bits a byte, low first) and string.
void put_varuint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void put_varstring(std::string& out, std::string_view s) {
  put_varuint(out, s.size());
  out += s;
}

// y-websocket's sync message (y-protocols/sync: messageSync 0, messageYjsUpdate 2) carrying a
// Yjs update in its v1 encoding (yjs/src/utils/encoding.js) of one item: the root Y.Map
// "scene"'s `key` set to the string `value` by `client` at `clock`.
std::string yjs_map_set(std::uint32_t client, std::uint64_t clock, std::string_view key,
                        std::string_view value) {
  std::string u;
  put_varuint(u, 1);  // clients
  put_varuint(u, 1);  // structs of the client
  put_varuint(u, client);
  put_varuint(u, clock);
  u += static_cast<char>(8 | 0x20);  // ContentAny; a parentSub (the map's key); no origins
  put_varuint(u, 1);                 // the parent is a root type, by name
  put_varstring(u, "scene");
  put_varstring(u, key);
  put_varuint(u, 1);            // one value
  u += static_cast<char>(119);  // lib0's writeAny: a string
  put_varstring(u, value);
  put_varuint(u, 0);  // an empty delete set
  std::string m;
  put_varuint(m, 0);
  put_varuint(m, 2);
  put_varstring(m, u);
  return m;
}

// y-websocket's awareness message (messageAwareness 1, y-protocols/awareness): one client's
// state, a JSON object, at `clock` (which must grow for the server to take it).
std::string yjs_awareness(std::uint32_t client, std::uint64_t clock, std::string_view json) {
  std::string a;
  put_varuint(a, 1);
  put_varuint(a, client);
  put_varuint(a, clock);
  put_varstring(a, json);
  std::string m;
  put_varuint(m, 1);
  put_varstring(m, a);
  return m;
}

double percentile(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

class Client {
 public:
  Client(asio::io_context& io, const Config& cfg, Stats& stats, int index, std::string token)
      : io_(io),
        cfg_(cfg),
        stats_(stats),
        index_(index),
        token_(std::move(token)),
        ws_(io),
        port_(cfg.ports[static_cast<std::size_t>(index) % cfg.ports.size()]) {
    room_ = cfg.project + "/room" + std::to_string(index / cfg.room_size);
  }

  asio::awaitable<bool> open() {
    tcp::resolver resolver(io_);
    auto [rec, results] =
        co_await resolver.async_resolve(cfg_.host, std::to_string(port_), nothrow);
    if (rec) co_return fail();
    auto [cec, ep] =
        co_await asio::async_connect(beast::get_lowest_layer(ws_).socket(), results, nothrow);
    if (cec) co_return fail();
    beast::get_lowest_layer(ws_).socket().set_option(tcp::no_delay(true));
    if (socketio_) co_return co_await open_socketio();
    if (yjs_) co_return co_await open_yjs();
    ws_.set_option(websocket::stream_base::decorator([](websocket::request_type& req) {
      req.set(bhttp::field::sec_websocket_protocol, "kiln.v1");
    }));
    auto [hec] = co_await ws_.async_handshake(cfg_.host, "/v1/collab", nothrow);
    if (hec) co_return fail();
    ++stats_.connected;
    if (!co_await send("{\"t\":\"hello\",\"id\":1,\"token\":\"" + token_ + "\"}")) co_return false;
    if (!co_await expect("\"t\":\"welcome\"")) co_return false;
    if (!co_await send("{\"t\":\"join\",\"id\":2,\"room\":\"" + room_ + "\"}")) co_return false;
    if (!co_await expect("\"t\":\"joined\"")) co_return false;
    ++stats_.joined;
    std::string create = "{\"t\":\"op\",\"id\":3,\"room\":\"" + room_ +
                         "\",\"ops\":[{\"op\":\"create\",\"entity\":\"c" + std::to_string(index_) +
                         "\",\"parent\":\"root\"}]}";
    co_return co_await send(create);
  }

  // Engine.IO 4 over WebSocket (its "0" open packet), socket.io's connect to the main
  // namespace ("40"), then the join event with an acknowledgement ("421[...]" -> "431[...]").
  asio::awaitable<bool> open_socketio() {
    auto [hec] =
        co_await ws_.async_handshake(cfg_.host, "/socket.io/?EIO=4&transport=websocket", nothrow);
    if (hec) co_return fail();
    ++stats_.connected;
    if (!co_await expect("0{", true)) co_return false;
    if (!co_await send("40")) co_return false;
    if (!co_await expect("40", true)) co_return false;
    if (!co_await send("421[\"join\",\"" + room_ + "\"]")) co_return false;
    if (!co_await expect("431[", true)) co_return false;
    ++stats_.joined;
    co_return true;
  }

  // y-websocket: the room is the path; the server's first message (its sync step 1) says the
  // connection is the room's.
  asio::awaitable<bool> open_yjs() {
    auto [hec] = co_await ws_.async_handshake(cfg_.host, "/" + room_, nothrow);
    if (hec) co_return fail();
    ++stats_.connected;
    ws_.binary(true);
    if (!co_await expect("", true)) co_return false;
    ++stats_.joined;
    co_return true;
  }

  asio::awaitable<void> read_loop() {
    beast::flat_buffer buf;
    for (;;) {
      auto [ec, n] = co_await ws_.async_read(buf, nothrow);
      if (ec) {
        ++stats_.closed;
        co_return;
      }
      const auto now = now_ns();
      std::string_view f(static_cast<const char*>(buf.cdata().data()), buf.size());
      ++stats_.frames_in;
      stats_.bytes_in += f.size();
      if (stats_.measuring && yjs_) {
        // Every update and awareness state goes to the whole room, the author's included:
        // the author's own update is its acknowledgement, its own cursor is not a sample.
        const bool own = f.find(own_) != std::string_view::npos;
        if (f.starts_with(std::string_view("\x00\x02", 2))) {
          if (!own) {
            record_ts(f, stats_.op_ms, now);
          } else if (auto it = sent_.find(id_of(f)); it != sent_.end()) {
            stats_.ack_ms.push_back(static_cast<double>(now - it->second) / 1e6);
            sent_.erase(it);
          }
        } else if (f.starts_with("\x01") && !own) {
          record_ts(f, stats_.cursor_ms, now);
        }
      } else if (stats_.measuring && socketio_) {
        if (f.starts_with("42[\"eph\"")) {
          record_ts(f, stats_.cursor_ms, now);
        } else if (f.starts_with("42[\"ops\"")) {
          record_ts(f, stats_.op_ms, now);
        } else if (f.starts_with("43")) {
          std::int64_t id = -1;
          std::from_chars(f.data() + 2, f.data() + f.size(), id);
          auto it = sent_.find(id);
          if (it != sent_.end()) {
            stats_.ack_ms.push_back(static_cast<double>(now - it->second) / 1e6);
            sent_.erase(it);
          }
        }
      } else if (stats_.measuring) {
        if (f.starts_with("{\"t\":\"eph\"")) {
          record_ts(f, stats_.cursor_ms, now);
        } else if (f.starts_with("{\"t\":\"ops\"")) {
          record_ts(f, stats_.op_ms, now);
        } else if (f.starts_with("{\"t\":\"ack\"")) {
          auto it = sent_.find(id_of(f));
          if (it != sent_.end()) {
            stats_.ack_ms.push_back(static_cast<double>(now - it->second) / 1e6);
            sent_.erase(it);
          }
        } else if (f.starts_with("{\"t\":\"nack\"")) {
          ++stats_.errors;
          ++stats_.nacks;
        }
      }
      buf.consume(buf.size());
    }
  }

  // One loop per client sends both cursors (when active) and ops, so that writes on the
  // stream never overlap.
  asio::awaitable<void> load_loop(std::chrono::steady_clock::time_point until, bool active) {
    using clock = std::chrono::steady_clock;
    asio::steady_timer timer(io_);
    const auto cursor_period =
        std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / cfg_.cursor_hz));
    const auto op_period =
        std::chrono::nanoseconds(static_cast<std::int64_t>(cfg_.op_interval_s * 1e9));
    auto next_cursor = active
                           ? clock::now() + std::chrono::nanoseconds(rng() % cursor_period.count())
                           : clock::time_point::max();
    auto next_op = clock::now() + std::chrono::nanoseconds(rng() % op_period.count());
    std::int64_t id = 10;
    int x = 0;
    for (;;) {
      const auto next = std::min(next_cursor, next_op);
      if (next >= until) co_return;
      timer.expires_at(next);
      co_await timer.async_wait(nothrow);
      const auto ts = now_ns();
      std::string frame;
      if (next == next_op) {
        next_op += op_period;
        ++id;
        if (stats_.measuring) sent_[id] = ts;
        // The same body in both protocols; socket.io's event carries its ack id up front.
        const auto body = "{\"t\":\"op\",\"id\":" + std::to_string(id) + ",\"room\":\"" + room_ +
                          "\",\"ops\":[{\"op\":\"set\",\"entity\":\"c" + std::to_string(index_) +
                          "\",\"key\":\"p\",\"value\":{\"ts\":" + std::to_string(ts) + "}}]}";
        frame = socketio_ ? "42" + std::to_string(id) + "[\"op\"," + body + "]" : body;
        if (yjs_) {
          frame = yjs_map_set(
              yjs_client(), yjs_clock_++, "c" + std::to_string(index_) + "-" + std::to_string(id),
              own_ + "\"id\":" + std::to_string(id) + ",\"ts\":" + std::to_string(ts) + "}");
        }
      } else {
        next_cursor += cursor_period;
        if (stats_.measuring) ++stats_.eph_sent;
        const auto body = "{\"t\":\"eph\",\"room\":\"" + room_ +
                          "\",\"kind\":\"cursor\",\"data\":{\"x\":" + std::to_string(++x) +
                          ",\"ts\":" + std::to_string(ts) + "}}";
        frame = socketio_ ? "42[\"eph\"," + body + "]" : body;
        if (yjs_) {
          frame = yjs_awareness(yjs_client(), ++yjs_awareness_clock_,
                                "{\"cursor\":" + own_ + "\"x\":" + std::to_string(x) +
                                    ",\"ts\":" + std::to_string(ts) + "}}");
        }
      }
      if (!co_await send(std::move(frame))) co_return;
    }
  }

  void close() {
    beast::error_code ignored;
    beast::get_lowest_layer(ws_).socket().close(ignored);
  }

 private:
  bool fail() {
    ++stats_.errors;
    return false;
  }

  static std::int64_t id_of(std::string_view f) {
    auto pos = f.find("\"id\":");
    std::int64_t id = -1;
    if (pos != std::string_view::npos) std::from_chars(f.data() + pos + 5, f.data() + f.size(), id);
    return id;
  }

  asio::awaitable<bool> send(std::string frame) {
    auto [ec, n] = co_await ws_.async_write(asio::buffer(frame), nothrow);
    co_return ec ? fail() : true;
  }

  // Reads until a frame holds `what` (begins with it: `prefix`).
  asio::awaitable<bool> expect(std::string_view what, bool prefix = false) {
    beast::flat_buffer buf;
    for (;;) {
      auto [ec, n] = co_await ws_.async_read(buf, nothrow);
      if (ec) co_return fail();
      std::string_view f(static_cast<const char*>(buf.cdata().data()), buf.size());
      if (prefix ? f.starts_with(what) : f.find(what) != std::string_view::npos) co_return true;
      buf.consume(buf.size());
    }
  }

  std::uint64_t rng() {
    static std::mt19937_64 gen(42);
    return gen();
  }

  asio::io_context& io_;
  const Config& cfg_;
  Stats& stats_;
  int index_;
  std::string token_;
  std::string room_;
  websocket::stream<beast::tcp_stream> ws_;
  std::uint16_t port_;
  bool socketio_ = cfg_.protocol == "socketio";
  bool yjs_ = cfg_.protocol == "yjs";
  // yjs: this client's id (Yjs client ids are 32-bit), the next item's clock, the awareness
  // clock; `own_` opens every JSON value it sends, so its echoes are told apart.
  std::uint32_t yjs_client() const { return 1000000u + static_cast<std::uint32_t>(index_); }
  std::uint64_t yjs_clock_ = 0;
  std::uint64_t yjs_awareness_clock_ = 0;
  std::string own_ = "{\"c\":" + std::to_string(index_) + ",";
  std::unordered_map<std::int64_t, std::int64_t> sent_;
};

// GET /metrics from one gateway; returns {cpu_seconds, rss_bytes} (negative on failure).
std::pair<double, double> scrape_one(const Config& cfg, std::uint16_t port) {
  try {
    asio::io_context io;
    tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.connect(resolver.resolve(cfg.host, std::to_string(port)));
    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, "/metrics", 11};
    req.set(bhttp::field::host, cfg.host);
    bhttp::write(stream, req);
    beast::flat_buffer buf;
    bhttp::response<bhttp::string_body> res;
    bhttp::read(stream, buf, res);
    auto value = [&](std::string_view name) {
      auto pos = res.body().find("\n" + std::string(name) + " ");
      return pos == std::string::npos ? -1.0 : std::stod(res.body().substr(pos + name.size() + 2));
    };
    return {value("process_cpu_seconds_total"), value("process_resident_memory_bytes")};
  } catch (const std::exception&) {
    return {-1, -1};
  }
}

// User and system CPU seconds of the servers' processes (/proc/PID/stat, fields 14 and 15),
// summed; {-1, -1} when one cannot be read.
std::pair<double, double> process_cpu(const std::vector<int>& pids) {
  double user = 0, sys = 0;
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  for (int pid : pids) {
    std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
    if (f == nullptr) return {-1, -1};
    char line[2048];
    const bool ok = std::fgets(line, sizeof line, f) != nullptr;
    std::fclose(f);
    const char* after = ok ? std::strrchr(line, ')') : nullptr;  // the name may hold spaces
    unsigned long long ut = 0, st = 0;
    if (after == nullptr ||
        std::sscanf(after + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) !=
            2)
      return {-1, -1};
    user += static_cast<double>(ut) / tick;
    sys += static_cast<double>(st) / tick;
  }
  return {user, sys};
}

// Resident bytes of the servers' processes (/proc/PID/statm's second field), summed; -1
// when one cannot be read.
double process_rss(const std::vector<int>& pids) {
  double rss = 0;
  const auto page = static_cast<double>(sysconf(_SC_PAGESIZE));
  for (int pid : pids) {
    std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/statm").c_str(), "r");
    if (f == nullptr) return -1;
    unsigned long long size = 0, resident = 0;
    const bool ok = std::fscanf(f, "%llu %llu", &size, &resident) == 2;
    std::fclose(f);
    if (!ok) return -1;
    rss += static_cast<double>(resident) * page;
  }
  return rss;
}

// Summed over every gateway: {cpu_seconds, rss_bytes} from their /metrics (kiln.v1), or
// {-1, rss} from the --pid processes (a peer has no /metrics; RSS is the same measure).
std::pair<double, double> scrape(const Config& cfg) {
  if (cfg.protocol != "kiln") return {-1, cfg.pids.empty() ? -1 : process_rss(cfg.pids)};
  double cpu = 0, rss = 0;
  for (auto port : cfg.ports) {
    auto [c, r] = scrape_one(cfg, port);
    if (c < 0) return {-1, -1};
    cpu += c;
    rss += r;
  }
  return {cpu, rss};
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  CLI::App app{"kiln-bench: load generators for Kiln", "kiln-bench"};
  app.require_subcommand(1);
  auto* collab = app.add_subcommand("collab", "WebSocket clients against /v1/collab");
  collab->add_option("--host", cfg.host);
  collab->add_option("--port", cfg.ports, "Gateway port; repeat for several gateways")->required();
  collab->add_option("--secret", cfg.secret, "The gateway's auth.jwt_secret (kiln.v1)");
  collab
      ->add_option("--protocol", cfg.protocol,
                   "kiln (kiln.v1 on /v1/collab), socketio (bench/peers/socketio-relay.js) or yjs "
                   "(bench/peers/yws-relay.mjs)")
      ->check(CLI::IsMember({"kiln", "socketio", "yjs"}));
  collab->add_option("--clients", cfg.clients)->check(CLI::Range(1, 100000));
  collab->add_option("--room-size", cfg.room_size)->check(CLI::Range(1, 10000));
  collab->add_option("--active", cfg.active, "Share of clients sending cursors")
      ->check(CLI::Range(0.0, 1.0));
  collab->add_option("--cursor-hz", cfg.cursor_hz)->check(CLI::Range(1.0, 1000.0));
  collab->add_option("--op-interval", cfg.op_interval_s, "Seconds between one client's ops")
      ->check(CLI::Range(0.0001, 3600.0));
  collab->add_option("--warmup", cfg.warmup_s)->check(CLI::Range(0.0, 600.0));
  collab->add_option("--duration", cfg.duration_s)->check(CLI::Range(0.1, 3600.0));
  collab->add_option("--pid", cfg.pids,
                     "A server's process id on this machine (repeat): its user and system CPU "
                     "per delivered frame, apart");
  CLI11_PARSE(app, argc, argv);
  if (cfg.protocol == "kiln" && cfg.secret.empty()) {
    std::fprintf(stderr, "kiln-bench collab: --secret is required with --protocol kiln\n");
    return 2;
  }
  if (cfg.protocol != "kiln" && cfg.pids.empty()) {
    std::fprintf(stderr, "kiln-bench collab: --pid is required with --protocol %s (no /metrics)\n",
                 cfg.protocol.c_str());
    return 2;
  }

  asio::io_context io(1);
  Stats stats;
  std::vector<std::unique_ptr<Client>> clients;
  const auto exp = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count() +
                   3600;
  for (int i = 0; i < cfg.clients; ++i) {
    kiln::auth::Claims c;
    c.sub = "bench" + std::to_string(i);
    c.name = c.sub;
    c.exp = exp;
    c.roles[cfg.project] = kiln::auth::Role::Editor;
    clients.push_back(std::make_unique<Client>(
        io, cfg, stats, i, cfg.secret.empty() ? "" : kiln::auth::sign_hs256(c, cfg.secret)));
  }

  const auto t_start = std::chrono::steady_clock::now();
  double idle_rss = -1, base_rss = scrape(cfg).second;
  std::pair<double, double> m0{-1, -1}, m1{-1, -1}, p0{-1, -1}, p1{-1, -1};
  double connect_s = 0;

  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        // Open connections with bounded concurrency.
        int next = 0;
        auto opener = [&]() -> asio::awaitable<void> {
          while (next < cfg.clients) {
            auto& c = *clients[static_cast<std::size_t>(next++)];
            if (co_await c.open()) asio::co_spawn(io, c.read_loop(), asio::detached);
          }
        };
        std::vector<asio::awaitable<void>> openers;
        int workers = std::min(cfg.connect_concurrency, cfg.clients);
        int done = 0;
        asio::steady_timer all_open(io, asio::steady_timer::time_point::max());
        for (int w = 0; w < workers; ++w) {
          asio::co_spawn(io, opener(), [&](std::exception_ptr) {
            if (++done == workers) all_open.cancel();
          });
        }
        co_await all_open.async_wait(nothrow);
        connect_s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        // Everyone is connected and idle: the gateway's memory per idle connection.
        asio::steady_timer settle(io, std::chrono::milliseconds(500));
        co_await settle.async_wait(nothrow);
        idle_rss = scrape(cfg).second;

        const auto load_start = std::chrono::steady_clock::now();
        const auto measure_start =
            load_start + std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::duration<double>(cfg.warmup_s));
        const auto until = measure_start + std::chrono::duration_cast<std::chrono::nanoseconds>(
                                               std::chrono::duration<double>(cfg.duration_s));
        // Active clients are spread evenly, so every room has its share of them.
        const double active_every = cfg.active > 0 ? 1.0 / cfg.active : 0;
        double next_active = 0;
        for (int i = 0; i < cfg.clients; ++i) {
          bool active = cfg.active > 0 && i >= static_cast<int>(next_active);
          if (active) next_active += active_every;
          asio::co_spawn(io, clients[static_cast<std::size_t>(i)]->load_loop(until, active),
                         asio::detached);
        }
        asio::steady_timer t(io, measure_start);
        co_await t.async_wait(nothrow);
        stats.measuring = true;
        stats.frames_in = 0;
        stats.bytes_in = 0;
        m0 = scrape(cfg);
        if (!cfg.pids.empty()) p0 = process_cpu(cfg.pids);
        t.expires_at(until);
        co_await t.async_wait(nothrow);
        m1 = scrape(cfg);
        if (!cfg.pids.empty()) p1 = process_cpu(cfg.pids);
        stats.measuring = false;
        for (auto& c : clients) c->close();
        io.stop();
      },
      asio::detached);
  io.run();

  const double secs = cfg.duration_s;
  boost::json::object out;
  out["clients"] = cfg.clients;
  out["protocol"] = cfg.protocol;
  out["gateways"] = cfg.ports.size();
  out["room_size"] = cfg.room_size;
  out["active_share"] = cfg.active;
  out["cursor_hz"] = cfg.cursor_hz;
  out["op_interval_s"] = cfg.op_interval_s;
  out["measured_s"] = secs;
  out["connect_s"] = connect_s;
  out["connected"] = stats.connected;
  out["joined"] = stats.joined;
  out["errors"] = stats.errors;
  out["closed_by_server"] = stats.closed;
  out["delivered_msgs_per_s"] = static_cast<double>(stats.frames_in) / secs;
  out["delivered_mib_per_s"] = static_cast<double>(stats.bytes_in) / secs / (1 << 20);
  out["op_samples"] = stats.op_ms.size();
  out["acks"] = stats.ack_ms.size();
  out["acks_per_s"] = static_cast<double>(stats.ack_ms.size()) / secs;
  out["nacks"] = stats.nacks;
  out["eph_sent"] = stats.eph_sent;
  out["op_p50_ms"] = percentile(stats.op_ms, 0.50);
  out["op_p99_ms"] = percentile(stats.op_ms, 0.99);
  out["ack_p50_ms"] = percentile(stats.ack_ms, 0.50);
  out["ack_p99_ms"] = percentile(stats.ack_ms, 0.99);
  out["cursor_samples"] = stats.cursor_ms.size();
  out["cursor_p50_ms"] = percentile(stats.cursor_ms, 0.50);
  out["cursor_p99_ms"] = percentile(stats.cursor_ms, 0.99);
  if (m0.first >= 0 && m1.first >= 0) out["gateway_cpu_cores"] = (m1.first - m0.first) / secs;
  out["gateway_rss_mib"] = m1.second / (1 << 20);
  // Microseconds of the servers' CPU per frame the clients received (--pid).
  if (p0.first >= 0 && p1.first >= 0 && stats.frames_in > 0) {
    const double frames = static_cast<double>(stats.frames_in);
    out["server_user_us_per_frame"] = (p1.first - p0.first) * 1e6 / frames;
    out["server_sys_us_per_frame"] = (p1.second - p0.second) * 1e6 / frames;
    out["server_cpu_us_per_frame"] = (p1.first - p0.first + p1.second - p0.second) * 1e6 / frames;
  }
  if (base_rss > 0 && idle_rss > 0 && stats.joined > 0) {
    out["gateway_bytes_per_idle_connection"] = (idle_rss - base_rss) / stats.joined;
  }
  std::printf("%s\n", boost::json::serialize(out).c_str());
  return stats.joined == cfg.clients ? 0 : 1;
}
