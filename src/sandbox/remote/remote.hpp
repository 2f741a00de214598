// A sandbox host's internal API (`kiln sandboxd`; docs/terminals.md, "A sandbox host"): the
// terminal sessions of one host served to the nodes that face users (the API's REST routes,
// the gateway's /v1/term), and the client those nodes use, as an adapter of the
// TerminalSessions port. Every request carries the cluster's service key
// (`Authorization: Bearer <api.service_key>`) and names the user it acts for: the user's own
// token was checked by the node that faces the user, which also decides revocation.
//
//   POST   /internal/v1/users/{user}/terminals   {"rows","cols","command"} -> 201 session
//   GET    /internal/v1/users/{user}/terminals                          -> {"items":[session]}
//   GET    /internal/v1/users/{user}/terminals/{id}                     -> session
//   DELETE /internal/v1/users/{user}/terminals/{id}                     -> 204
//   GET    /internal/v1/term   (WebSocket, kiln.term.v1; attach names "user", not "token")
// A session is {"id","owner","command","created_at","running","end","attached","exit"} (exit: null
// or
// {"code","signal","reason","message"}). An error is {"error": Errc's name, "detail"} with
// 400 invalid, 404 not_found, 409 quota or not_running, 502 failed, 503 busy or unavailable;
// 401 without the key.
#pragma once

#include "platform/http.hpp"
#include "sandbox/remote/wire.hpp"
#include "sandbox/terminals.hpp"

#include <boost/json/value.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace kiln {
class ThreadPool;
}
namespace kiln::http {
class Client;
}

namespace kiln::sandbox::remote {

inline constexpr const char* kTermPath = "/internal/v1/term";

// Whether `req` carries `Authorization: Bearer <service_key>` (compared in constant time;
// never for an empty key).
bool authorized(const http::Request& req, const std::string& service_key);

// Whether `user` is a user id as Kiln's API makes them: 1-128 bytes, no whitespace or
// control character, no '/', '"' or '\\' (what the host acts for).
bool valid_user(std::string_view user);

// Serves `sessions` on `router` (the routes above but the WebSocket, which
// gateway::TerminalEndpoint serves in its trusted mode). The calls block: they run on
// `pool` (a full pool answers 503). Requests without `service_key` answer 401.
void add_routes(http::Router& router, TerminalSessions& sessions, ThreadPool& pool,
                std::string service_key);

struct ClientOptions {
  std::string endpoint;                       // http://host:port of the sandbox host
  std::string service_key;                    // the cluster's (api.service_key)
  std::chrono::milliseconds timeout{10'000};  // per network step (an open starts a sandbox)
  // After the host did not answer, calls fail at once this long (the API's workers are
  // not all held by a host that hangs); then the next call tries it again.
  std::chrono::milliseconds hold_off{5'000};
};

// The port over a sandbox host's API. Thread-safe. Each call goes over a connection of its
// own, once (a kept one may have been closed by the host while idle, an open must not be
// sent twice, and a retry after a timeout would double the wait for a hung host). A host
// that does not answer is Errc::unavailable, naming it.
class Client final : public TerminalSessions {
 public:
  explicit Client(ClientOptions options);
  ~Client() override;
  Result<SessionInfo, Error> open(const std::string& owner, const Opening& what) override;
  Result<std::vector<SessionInfo>, Error> list(const std::string& owner) override;
  Result<SessionInfo, Error> get(const std::string& owner, const std::string& id) override;
  Result<void, Error> close(const std::string& owner, const std::string& id) override;

 private:
  struct Answer {
    int status = 0;
    boost::json::value body;
  };
  Result<Answer, Error> call(const std::string& method, const std::string& target,
                             const std::string& body);
  ClientOptions options_;
  std::mutex mu_;
  std::vector<std::unique_ptr<http::Client>> idle_;     // connections not in use
  std::chrono::steady_clock::time_point down_until_{};  // under mu_: hold_off after a failure
};

// The port over several sandbox hosts (sandbox.daemon names them): a session's id carries
// its host's key (wire.hpp, cluster_id), so every call after open goes to the host that
// has it. An open goes to the host a hash of the user picks (so that a user's sessions,
// and the per-user quota, stay on one host), or, when that host does not answer or is
// full, to the next. A list asks every host and gives what those that answered have.
class Hosts final : public TerminalSessions {
 public:
  // `addresses`: "host:port" each, at least one.
  Hosts(const std::vector<std::string>& addresses, const std::string& service_key,
        std::chrono::milliseconds timeout = std::chrono::milliseconds(10'000));
  Result<SessionInfo, Error> open(const std::string& owner, const Opening& what) override;
  Result<std::vector<SessionInfo>, Error> list(const std::string& owner) override;
  Result<SessionInfo, Error> get(const std::string& owner, const std::string& id) override;
  Result<void, Error> close(const std::string& owner, const std::string& id) override;

 private:
  struct Host {
    std::string key, address;
    std::unique_ptr<Client> client;
  };
  Host* host_of(const std::string& id, std::string& inner);
  static SessionInfo named(const Host& h, SessionInfo s);
  std::vector<Host> hosts_;
};

}  // namespace kiln::sandbox::remote
