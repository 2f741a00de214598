// The REST API (`/v1`, the `api` role; part of `kiln serve`): projects, members, scenes,
// tokens, me, terminal sessions, the job queue's admin routes. JSON in and out; errors are
// application/problem+json (RFC 9457) with stable `type` URIs (docs/api.md, docs/openapi.yaml).
//
// Every route authenticates: a user token (as the gateway checks them, plus revocation)
// or the service key (`Authorization: Bearer <key>`), which the studio's backend uses to
// mint user tokens. Permissions come from the membership table, not from the token's
// roles claim: a changed role applies at once. Someone without access to a project gets
// 404, exactly as for a project that does not exist. Handlers run on the database's
// threads, never on the event loop.
#pragma once

#include "assets/service.hpp"
#include "collab/access.hpp"
#include "platform/http.hpp"
#include "store/database.hpp"

#include <chrono>
#include <memory>
#include <string>

namespace kiln {
class ThreadPool;
namespace auth {
class Verifier;
}
namespace metrics {
class Registry;
}
namespace jobs {
class JobQueue;
}
namespace sandbox {
class TerminalSessions;
}
}  // namespace kiln

namespace kiln::api {

struct ApiOptions {
  std::string service_key;  // empty: no service key accepted
  std::string jwt_secret;   // HS256 secret for minting tokens; empty: minting refused (RS256)
  std::int64_t token_ttl_s = 3600;
  std::int64_t token_max_ttl_s = 30 * 24 * 3600;
  // Development only: POST /v1/dev/token mints a user token for anyone who asks
  // (auth.dev_tokens). Off by default; never on a node others can reach.
  bool dev_tokens = false;
  double user_requests_per_second = 20;  // burst: twice
  double service_requests_per_second = 200;
  std::size_t page_size = 50;
  std::size_t max_page_size = 200;
  assets::UploadOptions uploads;
};

class Api {
 public:
  // `slow`: threads for upload completions (they may read a whole object back to check its
  // hash), so that they never hold every thread of `pool`; null: `pool`. `jobs`: the job
  // queue the admin routes (/v1/admin/jobs) read and act on; null: they answer 503.
  Api(store::Database& store, const auth::Verifier& verifier, ThreadPool& pool, ApiOptions options,
      metrics::Registry& registry, collab::AccessBus* bus, ThreadPool* slow = nullptr,
      jobs::JobQueue* jobs = nullptr);
  ~Api();
  Api(const Api&) = delete;
  Api& operator=(const Api&) = delete;

  // The node's terminal sessions (/v1/terminals); without them those routes answer 503.
  // Before install().
  // `why_off`: what the 503 says when there are none.
  void set_terminals(sandbox::TerminalSessions* sessions, std::string why_off = {});
  void install(http::Router& router);
  // Aborts open uploads idle for longer than uploads.stale_after_s (their multipart
  // uploads too); returns how many. Blocking: call it off the event loop. Safe on several
  // API nodes at once (each upload is claimed by one).
  std::size_t sweep_stale_uploads();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kiln::api
