// The API's state and handlers (Api::Impl), shared by its translation units, one per
// resource: access.cpp (authentication, limits, read-your-writes, roles), tokens.cpp (me,
// tokens, revocation), projects.cpp (projects, members), scenes.cpp, uploads.cpp (uploads,
// assets, the Uppy routes), terminals.cpp (terminal sessions), jobs.cpp (the job queue's admin
// routes); api.cpp holds the route
// table.
#pragma once

#include "api/api.hpp"
#include "api/problem.hpp"
#include "api/request.hpp"
#include "assets/service.hpp"
#include "jobs/queue.hpp"
#include "platform/metrics.hpp"
#include "platform/token_bucket.hpp"
#include "store/projects.hpp"

#include <mutex>
#include <unordered_map>

namespace kiln::api {

struct Principal {
  bool service = false;
  std::string user;  // the user id (empty for the service key)
  std::string name;
  std::int64_t token_version = 0;  // the token's `ver` (revocation)
};

struct Api::Impl {
  Impl(store::Database& s, const auth::Verifier& v, ThreadPool& p, ApiOptions o,
       metrics::Registry& reg, collab::AccessBus* b)
      : store(s),
        projects(s),
        verifier(v),
        pool(p),
        options(std::move(o)),
        bus(b),
        auth_failures(reg.counter("kiln_api_auth_failures_total",
                                  "Requests refused 401, by reason (missing, invalid, revoked).",
                                  {"reason"})),
        rate_limited(reg.counter("kiln_api_rate_limited_total",
                                 "Requests refused 429, by principal kind (user, service).",
                                 {"kind"})),
        uploads(s, options.uploads, reg) {}

  store::Database& store;
  store::Projects projects;  // users, projects, members, scenes
  const auth::Verifier& verifier;
  ThreadPool& pool;
  ThreadPool* slow = nullptr;  // upload completions (set by Api)
  ApiOptions options;
  collab::AccessBus* bus;
  metrics::Family<metrics::Counter>& auth_failures;
  metrics::Family<metrics::Counter>& rate_limited;
  assets::UploadService uploads;  // direct uploads and assets (uploads.cpp)

  std::mutex mu;
  std::unordered_map<std::string, TokenBucket> buckets;        // by principal
  std::unordered_map<std::string, store::Receipt> last_write;  // by principal

  // --- authentication, limits, consistency --------------------------------------------
  Checked<Principal> authenticate(const Request& req);
  std::optional<Response> header_check(const Request& req);
  Checked<Principal> verify_credential(const Request& req);
  Checked<void> limit(const Principal& who);
  store::Receipt after(const Principal& who, const Request& req);
  void wrote(const Principal& who, const store::Receipt& r, Response& resp);
  // The caller's latest write, for their next reads on this node (no header to send back).
  void remember(const Principal& who, const store::Receipt& r);
  static std::string key_of(const Principal& who);
  Checked<std::string> role_in(const Principal& who, const std::string& project,
                               const Request& req);
  static Checked<void> need(const std::string& have, std::string_view at_least);
  void publish(collab::AccessChange c);
  Checked<std::size_t> page_limit(const Request& req);

  // --- handlers ------------------------------------------------------------------------
  Checked<Response> me(const Request& req, const Principal& who);
  Checked<Response> mint_token(const Request& req, const Principal& who);
  // POST /v1/dev/token (auth.dev_tokens): the same as mint_token without the service key.
  Checked<Response> dev_token(const Request& req, const Principal& who);
  Checked<Response> mint(const Request& req);
  Checked<Response> revoke(const Request& req, const Principal& who);
  Checked<Response> create_project(const Request& req, const Principal& who);
  Checked<Response> list_projects(const Request& req, const Principal& who);
  Checked<Response> get_project(const Request& req, const Principal& who);
  Checked<Response> rename_project(const Request& req, const Principal& who);
  Checked<Response> delete_project(const Request& req, const Principal& who);
  Checked<Response> list_members(const Request& req, const Principal& who);
  Checked<Response> put_member(const Request& req, const Principal& who);
  Checked<Response> delete_member(const Request& req, const Principal& who);
  Checked<Response> create_scene(const Request& req, const Principal& who);
  Checked<Response> list_scenes(const Request& req, const Principal& who);
  Checked<Response> get_scene(const Request& req, const Principal& who);
  Checked<Response> scene_stream(const Request& req, const Principal& who);
  Checked<Response> rename_scene(const Request& req, const Principal& who);
  Checked<Response> delete_scene(const Request& req, const Principal& who);

  // --- uploads, assets (uploads.cpp) ----------------------------------------------------
  Checked<Response> create_upload(const Request& req, const Principal& who);
  Checked<Response> get_upload(const Request& req, const Principal& who);
  Checked<Response> presign_parts(const Request& req, const Principal& who);
  Checked<Response> complete_upload(const Request& req, const Principal& who);
  Checked<Response> abort_upload(const Request& req, const Principal& who);
  Checked<Response> list_assets(const Request& req, const Principal& who);
  Checked<Response> get_asset(const Request& req, const Principal& who);
  Checked<Response> delete_asset(const Request& req, const Principal& who);
  Checked<Response> get_manifest(const Request& req, const Principal& who);
  Checked<Response> process_asset(const Request& req, const Principal& who);
  // The same operations under the routes Uppy's @uppy/aws-s3 calls (Companion's shapes).
  Checked<Response> uppy_create(const Request& req, const Principal& who);
  Checked<Response> uppy_list_parts(const Request& req, const Principal& who);
  Checked<Response> uppy_sign_part(const Request& req, const Principal& who);
  Checked<Response> uppy_sign_batch(const Request& req, const Principal& who);
  Checked<Response> uppy_complete(const Request& req, const Principal& who);
  Checked<Response> uppy_abort(const Request& req, const Principal& who);
  Checked<void> need_storage();

  // --- terminal sessions (terminals.cpp): a user's own, never the service key's ------------
  sandbox::TerminalSessions* terminals = nullptr;  // null: 503
  std::string terminals_off;                       // why (the 503's words)
  Checked<Response> open_terminal(const Request& req, const Principal& who);
  Checked<Response> list_terminals(const Request& req, const Principal& who);
  Checked<Response> get_terminal(const Request& req, const Principal& who);
  Checked<Response> close_terminal(const Request& req, const Principal& who);

  // --- the job queue's admin routes (jobs.cpp): the service key only ----------------------
  jobs::JobQueue* jobs = nullptr;  // null: 503
  Checked<Response> list_jobs(const Request& req, const Principal& who);
  Checked<Response> get_job(const Request& req, const Principal& who);
  Checked<Response> retry_job(const Request& req, const Principal& who);
  Checked<Response> cancel_job(const Request& req, const Principal& who);
  Checked<jobs::JobQueue*> admin_queue(const Principal& who);
  Checked<store::Upload> load_upload(const Request& req, const Principal& who);
  Checked<store::Upload> load_uppy(const Request& req, const Principal& who);
};

}  // namespace kiln::api
