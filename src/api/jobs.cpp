// /v1/admin/jobs: the job queue seen and steered by an operator with the service key
// (docs/jobs.md): list by state and type, one job with its history, retry a dead job,
// cancel. The queue decides; these handlers translate.
#include "api/impl.hpp"

#include "platform/log.hpp"

namespace kiln::api {

namespace {

// A JSON document stored by the queue (payload, result), or null when there is none.
json::value stored_json(const std::string& text) {
  if (text.empty()) return nullptr;
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  return ec ? json::value(json::string(text)) : v;
}

json::value text_or_null(const std::string& s) {
  return s.empty() ? json::value(nullptr) : json::value(json::string(s));
}

json::value time_or_null(std::int64_t ms) {
  return ms == 0 ? json::value(nullptr) : json::value(ms);
}

json::object job_json(const jobs::Job& j, bool with_history) {
  json::object o{
      {"id", j.id},
      {"type", j.type},
      {"state", std::string(jobs::to_string(j.state))},
      {"priority", j.priority},
      {"attempts", j.attempts},
      {"max_attempts", j.max_attempts},
      {"payload", stored_json(j.payload)},
      {"idempotency_key", text_or_null(j.idempotency_key)},
      {"progress", j.progress},
      {"status", j.status},
      {"cancel_requested", j.cancel_requested},
      {"result", stored_json(j.result)},
      {"last_error", text_or_null(j.last_error)},
      {"worker", text_or_null(j.worker)},
      {"lease_expires_at", time_or_null(j.state == jobs::State::leased ? j.lease_expires_at : 0)},
      {"not_before", j.not_before},
      {"created_at", j.created_at},
      {"updated_at", j.updated_at},
      {"finished_at", time_or_null(j.finished_at)}};
  if (with_history) {
    json::array history;
    for (const auto& a : j.history) {
      history.push_back(json::object{{"attempt", a.number},
                                     {"worker", a.worker},
                                     {"started_at", a.started_at},
                                     {"ended_at", time_or_null(a.ended_at)},
                                     {"outcome", text_or_null(a.outcome)},
                                     {"error", text_or_null(a.error)}});
    }
    o["history"] = std::move(history);
  }
  return o;
}

// A job id from the path: what the queue makes ("j" and hex digits), at most 64 bytes.
bool valid_job_id(std::string_view id) {
  if (id.size() < 2 || id.size() > 64 || id[0] != 'j') return false;
  return std::all_of(id.begin() + 1, id.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

Checked<std::string> job_param(const Request& req) {
  auto id = req.param("job");
  if (!valid_job_id(id)) return not_found();
  return id;
}

}  // namespace

Checked<jobs::JobQueue*> Api::Impl::admin_queue(const Principal& who) {
  if (!who.service)
    return Refusal{403, "forbidden", "The job queue's routes need the service key."};
  if (jobs == nullptr) return Refusal{503, "unavailable", "This node runs no job queue."};
  return jobs;
}

Checked<Response> Api::Impl::list_jobs(const Request& req, const Principal& who) {
  KILN_TRY(queue, admin_queue(who));
  jobs::ListRequest lr;
  if (auto s = req.query_param("state"); s && !s->empty()) {
    auto state = store::job_state_from(*s);
    if (!state)
      return invalid("'state' must be one of queued, leased, succeeded, dead, cancelled.");
    lr.state = *state;
  }
  if (auto t = req.query_param("type"); t && !t->empty()) {
    if (!jobs::valid_type(*t))
      return invalid("'type' must be 1-64 of [a-z0-9._-], starting with a letter.");
    lr.type = *t;
  }
  KILN_TRY(limit, page_limit(req));
  KILN_TRY(after_id, read_cursor(req.query_param("cursor")));
  lr.after = after_id;
  lr.limit = limit + 1;
  KILN_TRY(rows, queue->list(lr));
  json::array items;
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i)
    items.push_back(job_json(rows[i], false));
  json::value next = nullptr;
  if (rows.size() > limit) next = json::string(make_cursor(rows[limit - 1].id));
  return ok_json(200, json::object{{"items", items}, {"next_cursor", next}});
}

Checked<Response> Api::Impl::get_job(const Request& req, const Principal& who) {
  KILN_TRY(queue, admin_queue(who));
  KILN_TRY(id, job_param(req));
  KILN_TRY(j, queue->get(id));
  return ok_json(200, job_json(j, true));
}

Checked<Response> Api::Impl::retry_job(const Request& req, const Principal& who) {
  KILN_TRY(queue, admin_queue(who));
  KILN_TRY(id, job_param(req));
  KILN_CHECK(queue->retry(id));
  log::info("jobs: dead job retried by an operator", {{"job", id}});
  KILN_TRY(j, queue->get(id));
  return ok_json(200, job_json(j, true));
}

Checked<Response> Api::Impl::cancel_job(const Request& req, const Principal& who) {
  KILN_TRY(queue, admin_queue(who));
  KILN_TRY(id, job_param(req));
  KILN_TRY(state, queue->cancel(id));
  log::info("jobs: cancelled by an operator",
            {{"job", id}, {"state", std::string(jobs::to_string(state))}});
  // 200 with the job: cancelled at once (it was queued), or cancel_requested while its
  // worker runs it (it hears at its next heartbeat).
  KILN_TRY(j, queue->get(id));
  return ok_json(200, job_json(j, true));
}

}  // namespace kiln::api
