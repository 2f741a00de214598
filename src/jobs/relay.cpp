#include "jobs/relay.hpp"

#include "store/outbox.hpp"
#include "store/rooms.hpp"

#include <boost/json.hpp>

namespace kiln::jobs {

namespace {

// The lease's name in the leases table (shared with rooms' persister leases: no room is
// named so, room names are "project/scene").
constexpr const char* kLease = "outbox-relay";

}  // namespace

std::optional<NewJob> job_for(const store::Event& e) {
  if (e.kind != "asset.uploaded" && e.kind != "asset.process_requested" &&
      e.kind != "asset.deleted")
    return std::nullopt;
  boost::system::error_code ec;
  const auto body = boost::json::parse(e.body, ec);
  if (ec || !body.is_object()) return std::nullopt;
  const auto& o = body.as_object();
  auto text = [&](const char* k) -> boost::json::value {
    const auto* v = o.if_contains(k);
    return v != nullptr && v->is_string() ? *v : boost::json::value(nullptr);
  };
  NewJob n;
  n.idempotency_key = "event:" + e.id;
  if (e.kind == "asset.deleted") {
    n.type = "asset.cleanup";
    n.payload = boost::json::serialize(
        boost::json::object{{"event", e.id}, {"project", e.project}, {"asset", text("id")}});
    return n;
  }
  n.type = "asset.process";
  n.payload = boost::json::serialize(boost::json::object{{"event", e.id},
                                                         {"project", e.project},
                                                         {"asset", text("id")},
                                                         {"sha256", text("sha256")},
                                                         {"content_type", text("content_type")}});
  return n;
}

OutboxRelay::OutboxRelay(store::Database& db, JobQueue& queue, RelayOptions options)
    : db_(db), queue_(queue), options_(std::move(options)) {}

RelayPass OutboxRelay::pass() {
  RelayPass out;
  std::vector<store::Event> events;
  try {
    if (!store::Rooms(db_).acquire_lease(kLease, options_.holder, options_.lease)) {
      out.leased_elsewhere = true;
      return out;
    }
    db_.on_primary([&](sql::Connection& c) { events = store::outbox::pending(c, options_.batch); });
  } catch (const sql::Error& e) {
    if (!e.temporary()) throw;
    out.error = Error{Errc::unavailable, e.what()};
    return out;
  }
  for (const auto& e : events) {
    if (auto job = job_for(e)) {
      auto r = queue_.enqueue(*job);
      // A conflict: the event's job exists with another payload (made by an older relay whose
      // mapping differed). The event has its job: it is relayed, not retried forever.
      if (!r && r.error().code != Errc::conflict) {
        out.error = r.error();  // in order: nothing after this event goes before it
        return out;
      }
      ++out.relayed;
    } else {
      ++out.skipped;
    }
    try {
      db_.write([&](sql::Connection& c) { store::outbox::consume(c, e.id, store::jobs::now(c)); });
    } catch (const sql::Error& err) {
      if (!err.temporary()) throw;
      out.error = Error{Errc::unavailable, err.what()};  // enqueued: the next pass finds it again
      return out;
    }
  }
  return out;
}

}  // namespace kiln::jobs
