// The terminal endpoint (`/v1/term`, WebSocket subprotocol kiln.term.v1; docs/terminals.md):
// a client attaches to one of its terminal sessions (sandbox/sessions.hpp) from an output
// offset, types into it, resizes it, and reads its output, each piece with its offset. A
// connection is only a view: closing it (or losing it, or the gateway restarting) leaves
// the session running, and a client that comes back with the offset it read up to loses
// nothing the scrollback still holds. A separate socket from /v1/collab: a terminal's flood
// of output never delays a scene's ops.
//
// Client -> server (JSON text):
//   {"t":"attach","token":JWT,"session":ID,"offset":N}   first, within hello_timeout
//   {"t":"in","data":STRING}                               keys (UTF-8), at most 64 KiB
//   {"t":"resize","rows":R,"cols":C}                       1-1000 each
// Server -> client:
//   {"t":"attached","session":ID,"from":F,"lost":L,"end":E}   then the backlog from F
//   {"t":"out","offset":O,"data":BASE64}                      output bytes from offset O
//   {"t":"exit","code":C,"signal":S,"reason":R,"message":M}   the session ended; close 1000
//   {"t":"error","message":M}                                 a refused in/resize; goes on
// Closes: 4000 a frame that is not the protocol, 4001 a missing, bad, expired or revoked
// token (or no attach in time), 1012 the server drains (reattach), 4004 no such session of this
// user (another user's is the same), 4400 an offset past the output's end, 1008 a client that reads
// too slowly (the output queued for it passed max_queue_bytes: reattach from the offset read),
// 1013 the sandbox host did not answer (a relay; reattach later), 4029 the user has
// max_connections_per_user attached already (close one).
//
// Three ways to run it:
// - local: the sessions are this process's (`kiln serve` alone);
// - relay: the sessions are a sandbox host's (`kiln sandboxd`): the token is checked here,
//   then every frame goes through a connection to the host's /internal/v1/term, so a gateway
//   that restarts loses no session and a client reattaches through any gateway;
// - trusted: the host's side of a relay: the upgrade carries the cluster's service key and
//   the attach names the user ({"t":"attach","user":U,"session":S,"offset":N}).
#pragma once

#include "platform/websocket.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kiln {
class Runtime;
}
namespace kiln::auth {
class Verifier;
}
namespace kiln::sandbox {
class Sessions;
}

namespace kiln::gateway {

inline constexpr const char* kTerminalSubprotocol = "kiln.term.v1";

struct TerminalOptions {
  std::chrono::milliseconds hello_timeout{10'000};  // for the attach frame
  std::chrono::milliseconds idle_timeout{60'000};   // a peer silent this long (pings at half)
  // An `in` of 64 KiB, JSON-escaped (\u00e9 is 6 bytes for 2), fits.
  std::size_t max_message_bytes = 512 * 1024;
  std::size_t max_queue_bytes = 4u << 20;  // output waiting for a slow client
  // Connections one user may have attached at once on this endpoint (each may hold
  // max_queue_bytes and, relayed, a host's connection); past it 4029. 0: no limit.
  std::size_t max_connections_per_user = 16;
  // Whether the token's user revoked it since (user, token ver): done(true) refuses. Empty:
  // not checked. `done` may run on any thread.
  std::function<void(const std::string& user, std::int64_t ver, std::function<void(bool)> done)>
      revocation_check;
  std::function<std::int64_t()> now_unix;  // token expiry; empty: the system clock
  // Trusted mode (a sandbox host): the service key the upgrade must carry. Empty: users'
  // tokens.
  std::string trusted_key;
};

// Where a relaying endpoint sends its connections: the sandbox hosts' internal API. A
// session's id names its host (sandbox/remote/wire.hpp, cluster_id).
struct TerminalRelay {
  struct Host {
    std::string key;  // sandbox::remote::host_key of the address as configured
    std::string host;
    std::uint16_t port = 0;
  };
  std::vector<Host> hosts;
  std::string service_key;                           // the cluster's (api.service_key)
  std::chrono::milliseconds connect_timeout{5'000};  // then 1013 to the client
};

// /v1/term on a node without terminals: every upgrade refused 503 with `why`.
http::UpgradeHandler terminal_unavailable(std::string why);

// The endpoint's connections: an upgrade handler for /v1/term, and a way to end them all.
class TerminalEndpoint {
 public:
  // Local or trusted (options.trusted_key): this process's sessions. `verifier`: users'
  // tokens (null only when trusted).
  TerminalEndpoint(TerminalOptions options, const auth::Verifier* verifier,
                   sandbox::Sessions& sessions);
  // Relay: a sandbox host's sessions, reached on `runtime`'s loop.
  TerminalEndpoint(TerminalOptions options, const auth::Verifier& verifier, Runtime& runtime,
                   TerminalRelay relay);
  ~TerminalEndpoint();
  [[nodiscard]] http::UpgradeHandler handler() const;
  // Closes every connection with 1012 and `reason` (a drain: the sessions go on, and their
  // clients reattach with the offset they read up to; a relay's host connections close too).
  // Returns how many there were.
  std::size_t close_all(const std::string& reason);
  // close_all, then `done` (any thread) once every connection has gone: what a relaying
  // gateway's drain waits for.
  void drain(const std::string& reason, std::function<void()> done);
  // Closes `user`'s connections with 4001 (their tokens were revoked: the access bus's
  // Revoked). Their sessions go on; attaching again needs a new token.
  std::size_t revoke(const std::string& user);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln::gateway
