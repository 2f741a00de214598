// kiln-floor: the floor of a delivered frame's cost on this machine. A minimal relay that
// speaks just enough of kiln.v1 for `kiln-bench collab` (hello, join, op, eph; RFC 6455
// frames, unfragmented) and sends the same frames as the gateway in the same pattern: per
// op, an ack to its author and one shared `ops` frame to every other member; per room and
// tick (50 ms, as the gateway's `gateway.tick`), one `eph` batch of the latest update of
// each member and kind, members whose own entries are in it getting a copy without them.
// One thread, epoll, no allocation per delivered frame beyond the frame's own bytes, every
// frame queued for a connection in one event-loop turn written with one send(2). What it
// spends per delivered frame is the kernel's TCP work and little else: the gateway's cost
// is read as a ratio to it (docs/benchmarks.md).
//
// No access, persistence or validation: a measuring instrument, never a server.
//
//   kiln-floor [--port P] [--tick-ms 50]     prints "listening on PORT"
//   GET /metrics answers process_cpu_seconds_total and process_resident_memory_bytes, as
//   the gateway's, so the generator scrapes both alike.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

struct Conn;

struct Eph {
  Conn* from;
  std::string kind, data;
};

struct Room {
  std::string name;
  std::uint64_t seq = 0;
  std::vector<Conn*> members;
  std::map<std::pair<Conn*, std::string>, std::string> pending;  // (member, kind) -> data
};

struct Conn {
  int fd = -1;
  bool open = false;  // past the WebSocket handshake
  bool dirty = false;
  std::string in, out;
  std::string session, user;
  std::vector<Room*> rooms;
};

std::unordered_map<std::string, std::unique_ptr<Room>> rooms;
std::vector<Conn*> dirty;
int epfd = -1;

std::string_view field(std::string_view msg, std::string_view name) {
  std::string key = "\"" + std::string(name) + "\":\"";
  auto p = msg.find(key);
  if (p == std::string_view::npos) return {};
  p += key.size();
  auto e = msg.find('"', p);
  return e == std::string_view::npos ? std::string_view{} : msg.substr(p, e - p);
}

std::string_view number(std::string_view msg, std::string_view name) {
  std::string key = "\"" + std::string(name) + "\":";
  auto p = msg.find(key);
  if (p == std::string_view::npos) return {};
  p += key.size();
  auto e = p;
  while (e < msg.size() && (msg[e] == '-' || (msg[e] >= '0' && msg[e] <= '9'))) ++e;
  return msg.substr(p, e - p);
}

// The value after `"name":` when it is an array or an object, brackets balanced (strings
// in it hold no brackets in the generator's frames).
std::string_view nested(std::string_view msg, std::string_view name) {
  std::string key = "\"" + std::string(name) + "\":";
  auto p = msg.find(key);
  if (p == std::string_view::npos) return {};
  p += key.size();
  int depth = 0;
  for (auto e = p; e < msg.size(); ++e) {
    if (msg[e] == '[' || msg[e] == '{') ++depth;
    if ((msg[e] == ']' || msg[e] == '}') && --depth == 0) return msg.substr(p, e + 1 - p);
  }
  return {};
}

// A server frame (RFC 6455 5.2: FIN, text, unmasked) appended to the connection's queue.
void queue(Conn& c, std::string_view payload, unsigned opcode = 0x1) {
  char h[10];
  std::size_t n = 0;
  h[n++] = static_cast<char>(0x80 | opcode);
  if (payload.size() < 126) {
    h[n++] = static_cast<char>(payload.size());
  } else if (payload.size() < 65536) {
    h[n++] = 126;
    h[n++] = static_cast<char>(payload.size() >> 8);
    h[n++] = static_cast<char>(payload.size());
  } else {
    h[n++] = 127;
    for (int i = 7; i >= 0; --i) h[n++] = static_cast<char>(payload.size() >> (8 * i));
  }
  c.out.append(h, n);
  c.out.append(payload);
  if (!c.dirty) {
    c.dirty = true;
    dirty.push_back(&c);
  }
}

void close_conn(Conn* c) {
  for (auto* r : c->rooms) {
    std::erase(r->members, c);
    std::erase_if(r->pending, [&](const auto& kv) { return kv.first.first == c; });
  }
  std::erase(dirty, c);
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, nullptr);
  close(c->fd);
  delete c;
}

// Writes what is queued: one send; what the kernel does not take waits for EPOLLOUT.
bool flush(Conn& c) {
  while (!c.out.empty()) {
    const ssize_t n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN;
    c.out.erase(0, static_cast<std::size_t>(n));
  }
  return true;
}

std::string proc_metrics() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  const double cpu = static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
                     static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return "process_cpu_seconds_total " + std::to_string(cpu) + "\nprocess_resident_memory_bytes " +
         std::to_string(resident * sysconf(_SC_PAGESIZE)) + "\n";
}

std::string accept_key(std::string_view key) {
  std::string s(key);
  s += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";  // RFC 6455 1.3
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  unsigned char b64[64];
  const int n = EVP_EncodeBlock(b64, digest, SHA_DIGEST_LENGTH);
  return {reinterpret_cast<char*>(b64), static_cast<std::size_t>(n)};
}

// The HTTP request: /metrics answered and closed, an upgrade answered 101. False: close.
bool handshake(Conn& c) {
  const auto end = c.in.find("\r\n\r\n");
  if (end == std::string::npos) return c.in.size() < 16384;
  std::string_view req(c.in.data(), end);
  if (req.starts_with("GET /metrics")) {
    const auto body = "\n" + proc_metrics();
    c.out = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body;
    flush(c);
    return false;
  }
  auto k = req.find("Sec-WebSocket-Key: ");
  if (k == std::string_view::npos) k = req.find("sec-websocket-key: ");
  if (k == std::string_view::npos) return false;
  k += 19;
  const auto key = req.substr(k, req.find("\r\n", k) - k);
  c.out =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Protocol: kiln.v1\r\nSec-WebSocket-Accept: " +
      accept_key(key) + "\r\n\r\n";
  c.in.erase(0, end + 4);
  c.open = true;
  c.dirty = true;
  dirty.push_back(&c);
  return true;
}

void on_message(Conn& c, std::string_view m) {
  static std::uint64_t sessions = 0;
  const auto t = field(m, "t");
  if (t == "hello") {
    char hex[9];
    std::snprintf(hex, sizeof hex, "%08llx", static_cast<unsigned long long>(++sessions));
    c.session = hex;
    c.user = "bench" + std::to_string(sessions);
    queue(c, "{\"t\":\"welcome\",\"id\":" + std::string(number(m, "id")) + ",\"session\":\"" +
                 c.session + "\",\"node\":\"floor\",\"user\":\"" + c.user + "\",\"name\":\"" +
                 c.user + "\",\"heartbeat_ms\":30000}");
  } else if (t == "join") {
    auto& r = rooms[std::string(field(m, "room"))];
    if (!r) r = std::make_unique<Room>(), r->name = std::string(field(m, "room"));
    r->members.push_back(&c);
    c.rooms.push_back(r.get());
    queue(c, "{\"t\":\"joined\",\"id\":" + std::string(number(m, "id")) + ",\"room\":\"" + r->name +
                 "\",\"epoch\":\"floor\",\"seq\":" + std::to_string(r->seq) +
                 ",\"recovered\":false,\"snapshot\":{},\"presence\":[]}");
  } else if (t == "op") {
    auto it = rooms.find(std::string(field(m, "room")));
    if (it == rooms.end()) return;
    auto& r = *it->second;
    const auto seq = std::to_string(++r.seq);
    const auto frame = "{\"t\":\"ops\",\"room\":\"" + r.name + "\",\"seq\":" + seq +
                       ",\"author\":\"" + c.session +
                       "\",\"ops\":" + std::string(nested(m, "ops")) + "}";
    for (auto* peer : r.members) {
      if (peer == &c) {
        queue(c, "{\"t\":\"ack\",\"id\":" + std::string(number(m, "id")) + ",\"room\":\"" + r.name +
                     "\",\"seq\":" + seq + "}");
      } else {
        queue(*peer, frame);
      }
    }
  } else if (t == "eph") {
    auto it = rooms.find(std::string(field(m, "room")));
    if (it == rooms.end()) return;
    it->second->pending[{&c, std::string(field(m, "kind"))}] = std::string(nested(m, "data"));
  }
}

// The ephemeral tick: one batch per room, as the gateway's hub does.
void tick() {
  for (auto& [name, r] : rooms) {
    if (r->pending.empty()) continue;
    auto batch = [&](const Conn* without) {
      std::string out = "{\"t\":\"eph\",\"room\":\"" + r->name + "\",\"batch\":[";
      bool first = true;
      for (const auto& [key, data] : r->pending) {
        if (key.first == without) continue;
        out += first ? "" : ",";
        first = false;
        out += "{\"user\":\"" + key.first->user + "\",\"session\":\"" + key.first->session +
               "\",\"kind\":\"" + key.second + "\",\"data\":" + data + "}";
      }
      return first ? std::string() : out + "]}";
    };
    std::string shared;
    for (auto* m : r->members) {
      bool own = false;
      for (const auto& kv : r->pending) own = own || kv.first.first == m;
      if (!own) {
        if (shared.empty()) shared = batch(nullptr);
        queue(*m, shared);
      } else if (auto mine = batch(m); !mine.empty()) {
        queue(*m, mine);
      }
    }
    r->pending.clear();
  }
}

// Reads the client's frames (RFC 6455 5.2: masked, unfragmented); false: close.
bool on_frames(Conn& c) {
  for (;;) {
    if (c.in.size() < 2) return true;
    const auto* b = reinterpret_cast<const unsigned char*>(c.in.data());
    const unsigned opcode = b[0] & 0x0f;
    std::uint64_t len = b[1] & 0x7f;
    std::size_t at = 2;
    if (len == 126) {
      if (c.in.size() < 4) return true;
      len = (std::uint64_t{b[2]} << 8) | b[3];
      at = 4;
    } else if (len == 127) {
      if (c.in.size() < 10) return true;
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | b[2 + i];
      at = 10;
    }
    if (!(b[1] & 0x80) || len > (1u << 20)) return false;  // clients mask; 1 MiB at most
    if (c.in.size() < at + 4 + len) return true;
    const unsigned char* mask = b + at;
    std::string payload(c.in.data() + at + 4, len);
    for (std::size_t i = 0; i < len; ++i) payload[i] = static_cast<char>(payload[i] ^ mask[i % 4]);
    c.in.erase(0, at + 4 + len);
    if (opcode == 0x8) {
      queue(c, payload.substr(0, 2), 0x8);
      flush(c);
      return false;
    }
    if (opcode == 0x9) queue(c, payload, 0xA);
    if (opcode == 0x1) on_message(c, payload);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0, tick_ms = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--port") == 0) port = std::atoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--tick-ms") == 0) tick_ms = std::atoi(argv[i + 1]);
  }
  if (tick_ms < 1) {
    std::fprintf(stderr, "kiln-floor: --tick-ms must be at least 1\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  const int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd, 4096) != 0 ||
      getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen) != 0) {
    std::perror("kiln-floor: listen");
    return 1;
  }
  std::printf("listening on %d\n", ntohs(a.sin_port));
  std::fflush(stdout);

  epfd = epoll_create1(EPOLL_CLOEXEC);
  const int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  itimerspec period{};
  period.it_interval.tv_sec = tick_ms / 1000;
  period.it_interval.tv_nsec = (tick_ms % 1000) * 1'000'000L;
  period.it_value = period.it_interval;
  timerfd_settime(tfd, 0, &period, nullptr);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the listener
  epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
  Conn timer_tag;
  ev.data.ptr = &timer_tag;
  epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ev);

  std::vector<epoll_event> events(1024);
  char buf[65536];
  for (;;) {
    const int n = epoll_wait(epfd, events.data(), static_cast<int>(events.size()), -1);
    for (int i = 0; i < n; ++i) {
      auto* c = static_cast<Conn*>(events[i].data.ptr);
      if (c == nullptr) {
        for (int fd; (fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          auto* nc = new Conn;
          nc->fd = fd;
          epoll_event e{};
          e.events = EPOLLIN | EPOLLRDHUP;
          e.data.ptr = nc;
          epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e);
        }
        continue;
      }
      if (c == &timer_tag) {
        std::uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) > 0) tick();
        continue;
      }
      if (events[i].events & EPOLLOUT) {
        if (!flush(*c)) {
          close_conn(c);
          continue;
        }
        if (c->out.empty()) {
          epoll_event e{};
          e.events = EPOLLIN | EPOLLRDHUP;
          e.data.ptr = c;
          epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
        }
      }
      if (!(events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
      bool keep = true;
      for (;;) {
        const ssize_t r = read(c->fd, buf, sizeof buf);
        if (r > 0) {
          c->in.append(buf, static_cast<std::size_t>(r));
          continue;
        }
        if (r == 0 || errno != EAGAIN) keep = false;
        break;
      }
      if (keep && !c->open) keep = handshake(*c);
      if (keep && c->open) keep = on_frames(*c);
      if (!keep) close_conn(c);
    }
    // Every connection written to in this turn: one send each.
    for (auto* c : dirty) {
      c->dirty = false;
      if (!flush(*c)) {
        c->out.clear();  // its end is seen as a read error next turn
        continue;
      }
      if (!c->out.empty()) {
        epoll_event e{};
        e.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
        e.data.ptr = c;
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
      }
    }
    dirty.clear();
  }
}
