#include "api/impl.hpp"

#include "platform/log.hpp"
#include "platform/thread_pool.hpp"

namespace kiln::api {

Api::Api(store::Database& store, const auth::Verifier& verifier, ThreadPool& pool,
         ApiOptions options, metrics::Registry& registry, collab::AccessBus* bus, ThreadPool* slow,
         jobs::JobQueue* jobs)
    : impl_(std::make_shared<Impl>(store, verifier, pool, std::move(options), registry, bus)) {
  impl_->slow = slow != nullptr ? slow : &pool;
  impl_->jobs = jobs;
}

Api::~Api() = default;

void Api::set_terminals(sandbox::TerminalSessions* sessions, std::string why_off) {
  impl_->terminals = sessions;
  impl_->terminals_off = std::move(why_off);
}

void Api::install(http::Router& router) {
  std::weak_ptr<Impl> weak_impl = impl_;
  router.set_header_check([weak_impl](const Request& req) -> std::optional<Response> {
    auto self = weak_impl.lock();
    return self ? self->header_check(req) : std::nullopt;
  });
  using Fn = Checked<Response> (Impl::*)(const Request&, const Principal&);
  // `open`: the route needs no credentials (the dev token route); its callers share one
  // rate limit.
  auto add = [&](const char* method, const char* pattern, const char* name, Fn fn,
                 bool slow = false, bool open = false) {
    std::weak_ptr<Impl> weak = impl_;
    router.add_async(
        method, pattern, name, [weak, fn, slow, open](Request req, http::Responder respond) {
          auto self = weak.lock();
          if (!self) return respond(problem(503, "unavailable", "Shutting down."));
          auto task = [self, fn, open, req = std::move(req), respond]() {
            try {
              // A refusal is a value all the way up; exceptions here are outages and bugs.
              auto handled = [&]() -> Checked<Response> {
                KILN_TRY(who, open ? Checked<Principal>(Principal{false, "(dev-token)", "", 0})
                                   : self->authenticate(req));
                KILN_CHECK(self->limit(who));
                return ((*self).*fn)(req, who);
              }();
              respond(handled ? std::move(*handled) : answer(handled.error()));
            } catch (const sql::Error& e) {
              const bool down = e.temporary();
              // A database that cannot answer now is an outage to see (warn), not a fault of
              // Kiln's (error).
              (down ? log::warn : log::error)(
                  "api: database error", {{"request_id", req.request_id}, {"error", e.what()}});
              auto resp =
                  down ? problem(503, "unavailable", "The database is unavailable; retry shortly.")
                       : problem(500, "internal",
                                 "The server failed; the request id identifies it in the logs.");
              if (down) resp.headers.emplace_back("Retry-After", "2");
              respond(std::move(resp));
            } catch (const std::exception& e) {
              log::error("api: handler failed",
                         {{"request_id", req.request_id}, {"error", e.what()}});
              respond(problem(500, "internal",
                              "The server failed; the request id identifies it in the logs."));
            }
          };
          if (!(slow ? *self->slow : self->pool).post(std::move(task))) {
            auto resp = problem(503, "busy", "Too many requests in progress; retry shortly.");
            resp.headers.emplace_back("Retry-After", "1");
            respond(std::move(resp));
          }
        });
  };
  add("GET", "/v1/me", "api_me", &Impl::me);
  add("POST", "/v1/tokens", "api_tokens", &Impl::mint_token);
  add("POST", "/v1/users/{user}/revoke", "api_user_revoke", &Impl::revoke);
  if (impl_->options.dev_tokens)
    add("POST", "/v1/dev/token", "api_dev_token", &Impl::dev_token, false, /*open=*/true);
  add("POST", "/v1/projects", "api_projects_create", &Impl::create_project);
  add("GET", "/v1/projects", "api_projects_list", &Impl::list_projects);
  add("GET", "/v1/projects/{project}", "api_project_get", &Impl::get_project);
  add("PATCH", "/v1/projects/{project}", "api_project_rename", &Impl::rename_project);
  add("DELETE", "/v1/projects/{project}", "api_project_delete", &Impl::delete_project);
  add("GET", "/v1/projects/{project}/members", "api_members_list", &Impl::list_members);
  add("PUT", "/v1/projects/{project}/members/{user}", "api_member_put", &Impl::put_member);
  add("DELETE", "/v1/projects/{project}/members/{user}", "api_member_delete", &Impl::delete_member);
  add("POST", "/v1/projects/{project}/scenes", "api_scenes_create", &Impl::create_scene);
  add("GET", "/v1/projects/{project}/scenes", "api_scenes_list", &Impl::list_scenes);
  add("GET", "/v1/projects/{project}/scenes/{scene}", "api_scene_get", &Impl::get_scene);
  add("GET", "/v1/projects/{project}/scenes/{scene}/stream", "api_scene_stream",
      &Impl::scene_stream);
  add("PATCH", "/v1/projects/{project}/scenes/{scene}", "api_scene_rename", &Impl::rename_scene);
  add("DELETE", "/v1/projects/{project}/scenes/{scene}", "api_scene_delete", &Impl::delete_scene);
  add("POST", "/v1/projects/{project}/uploads", "api_uploads_create", &Impl::create_upload);
  add("GET", "/v1/projects/{project}/uploads/{upload}", "api_upload_get", &Impl::get_upload);
  add("POST", "/v1/projects/{project}/uploads/{upload}/parts", "api_upload_parts",
      &Impl::presign_parts);
  add("POST", "/v1/projects/{project}/uploads/{upload}/complete", "api_upload_complete",
      &Impl::complete_upload, /*slow=*/true);
  add("DELETE", "/v1/projects/{project}/uploads/{upload}", "api_upload_abort", &Impl::abort_upload);
  add("GET", "/v1/projects/{project}/assets", "api_assets_list", &Impl::list_assets);
  add("GET", "/v1/projects/{project}/assets/{asset}", "api_asset_get", &Impl::get_asset);
  add("DELETE", "/v1/projects/{project}/assets/{asset}", "api_asset_delete", &Impl::delete_asset);
  add("GET", "/v1/projects/{project}/assets/{asset}/manifest", "api_asset_manifest",
      &Impl::get_manifest);
  add("POST", "/v1/projects/{project}/assets/{asset}/process", "api_asset_process",
      &Impl::process_asset);
  add("POST", "/v1/terminals", "api_terminals_open", &Impl::open_terminal, /*slow=*/true);
  add("GET", "/v1/terminals", "api_terminals_list", &Impl::list_terminals);
  add("GET", "/v1/terminals/{terminal}", "api_terminal_get", &Impl::get_terminal);
  add("DELETE", "/v1/terminals/{terminal}", "api_terminal_close", &Impl::close_terminal,
      /*slow=*/true);
  add("GET", "/v1/admin/jobs", "api_admin_jobs_list", &Impl::list_jobs);
  add("GET", "/v1/admin/jobs/{job}", "api_admin_job_get", &Impl::get_job);
  add("POST", "/v1/admin/jobs/{job}/retry", "api_admin_job_retry", &Impl::retry_job);
  add("POST", "/v1/admin/jobs/{job}/cancel", "api_admin_job_cancel", &Impl::cancel_job);
  // Uppy's @uppy/aws-s3 (Companion's shapes); "batch" before "{part}": the first match wins.
  add("POST", "/s3/multipart", "uppy_create", &Impl::uppy_create);
  add("GET", "/s3/multipart/{upload}", "uppy_list_parts", &Impl::uppy_list_parts);
  add("GET", "/s3/multipart/{upload}/batch", "uppy_sign_batch", &Impl::uppy_sign_batch);
  add("GET", "/s3/multipart/{upload}/{part}", "uppy_sign_part", &Impl::uppy_sign_part);
  add("POST", "/s3/multipart/{upload}/complete", "uppy_complete", &Impl::uppy_complete,
      /*slow=*/true);
  add("DELETE", "/s3/multipart/{upload}", "uppy_abort", &Impl::uppy_abort);
}

}  // namespace kiln::api
