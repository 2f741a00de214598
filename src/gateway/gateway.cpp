#include "gateway/gateway.hpp"

#include "gateway/gateway_impl.hpp"
#include "platform/clock.hpp"
#include "platform/log.hpp"
#include "platform/runtime_asio.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <map>
#include <random>
#include <set>

namespace kiln::gateway {

namespace asio = boost::asio;

namespace {

// The completion of a background coroutine: an exception that ended it is logged.
auto log_failure(const char* what) {
  return [what](std::exception_ptr e) { log::exception(e, what); };
}

}  // namespace

Gateway::Impl::Impl(Runtime& rt, Options opts, collab::RoomEngine& eng,
                    const auth::Verifier& verifier, metrics::Registry& reg)
    : runtime(rt),
      options(std::move(opts)),
      engine(eng),
      hub(options.node),
      ctx{options, eng, hub, verifier, {}, {}, {}, {}},
      sessions_gauge(reg.gauge("kiln_gateway_sessions", "WebSocket sessions open now.").get()),
      closes(reg.counter("kiln_gateway_closes_total",
                         "Sessions closed by the server, by close code.", {"code"})),
      frames_out(reg.counter("kiln_gateway_frames_sent_total", "Frames sent to clients.").get()),
      limit_trips(reg.counter("kiln_gateway_limit_trips_total",
                              "Requests or connections stopped by a limit.", {"limit"})),
      reg_ref(reg) {
  ctx.metrics.frames_in = &reg.counter("kiln_gateway_frames_received_total",
                                       "Frames received from clients, by type.", {"type"});
  ctx.metrics.nacks =
      &reg.counter("kiln_gateway_nacks_total", "Requests refused, by code.", {"code"});
  ctx.metrics.limit_trips = &limit_trips;
  ctx.metrics.eph_dropped =
      &reg.counter("kiln_gateway_eph_dropped_total", "Ephemeral updates dropped by the rate limit.")
           .get();
  ctx.metrics.resyncs = &reg.counter("kiln_gateway_resyncs_total",
                                     "Sessions told to resume because a gap could not be filled.")
                             .get();
  ctx.now_unix = [] { return clock::unix_ms() / 1000; };
  ctx.defer = [&rt](std::function<void()> fn) { rt.post(std::move(fn)); };
  if (options.access_loader) {
    access = std::make_unique<AccessCache>(options.access, options.access_loader);
    ctx.decide = [cache = access.get()](const std::string& user, const std::string& room,
                                        std::function<void(AccessDecision)> done) {
      cache->decide(user, room, std::move(done));
    };
    auto stat = [this](const char* name, const char* help, auto field) {
      reg_ref.callback_gauge(
          name, help, [this, field] { return static_cast<double>(access->stats().*field); }, true);
    };
    stat("kiln_gateway_access_hits_total",
         "Joins decided from a cached project entry (younger than gateway.access_ttl_ms).",
         &AccessCache::Stats::hits);
    stat("kiln_gateway_access_loads_total",
         "Project access entries read from the database (joins, access changes, refresh).",
         &AccessCache::Stats::loads);
    stat("kiln_gateway_access_load_failures_total",
         "Project access reads that failed (database unavailable).", &AccessCache::Stats::failed);
    stat("kiln_gateway_access_stale_total",
         "Joins decided from an entry older than the TTL because the database did not answer.",
         &AccessCache::Stats::stale);
    stat("kiln_gateway_access_unavailable_total",
         "Joins refused as unavailable: the database did not answer and nothing usable was "
         "cached.",
         &AccessCache::Stats::refused);
  }
  reg.callback_gauge("kiln_gateway_rooms", "Rooms with members on this node.",
                     [this] { return static_cast<double>(hub.rooms()); });
  reg.callback_gauge(
      "kiln_gateway_seq_gaps_total", "Ops events that arrived after a gap.",
      [this] { return static_cast<double>(hub.stats().gaps); }, true);
  reg.callback_gauge(
      "kiln_gateway_seq_duplicates_total", "Ops events dropped as duplicates.",
      [this] { return static_cast<double>(hub.stats().duplicates_dropped); }, true);
  engine.set_events(&hub);
}

bool Gateway::Impl::add(Connection* c, std::weak_ptr<Connection> weak) {
  std::lock_guard lock(mu);
  if (draining || conns.size() >= options.max_sessions) return false;
  conns.emplace(c, std::move(weak));
  sessions_gauge.inc();
  return true;
}

std::vector<std::shared_ptr<Connection>> Gateway::Impl::live() {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard lock(mu);
  out.reserve(conns.size());
  for (auto& [ptr, weak] : conns) {
    if (auto c = weak.lock()) out.push_back(std::move(c));
  }
  return out;
}

void Gateway::Impl::recheck(const std::string& project,
                            std::vector<std::weak_ptr<Connection>> in_project) {
  if (!access) return;
  access->reload(project, [project, in_project = std::move(in_project)](AccessCache::Shared a) {
    if (!a) return;  // the database did not answer: sessions keep what they have
    for (const auto& weak : in_project) {
      if (auto c = weak.lock())
        c->with_session([project, a](Session& s) { s.revalidate(project, *a); });
    }
  });
}

void Gateway::Impl::refresh_all() {
  if (!access) return;
  std::map<std::string, std::vector<std::weak_ptr<Connection>>, std::less<>> by_project;
  for (auto& c : live()) {
    auto s = c->session();
    if (!s) continue;
    for (auto& p : s->projects()) by_project[p].push_back(c);
  }
  std::set<std::string, std::less<>> in_use;
  for (const auto& [p, list] : by_project) in_use.insert(p);
  access->sweep(in_use);
  for (auto& [p, list] : by_project) recheck(p, std::move(list));
}

void Gateway::Impl::remove(Connection* c) {
  std::function<void()> done;
  {
    std::lock_guard lock(mu);
    if (conns.erase(c) == 0) return;
    sessions_gauge.dec();
    if (draining && conns.empty() && on_empty) done = std::exchange(on_empty, {});
  }
  if (done) runtime.post(std::move(done));
}

Gateway::Gateway(Runtime& runtime, Options options, collab::RoomEngine& engine,
                 const auth::Verifier& verifier, metrics::Registry& registry)
    : impl_(std::make_shared<Impl>(runtime, std::move(options), engine, verifier, registry)) {}

Gateway::~Gateway() {
  impl_->engine.set_events(nullptr);
}

http::UpgradeHandler Gateway::upgrade_handler() {
  return collab_endpoint(impl_);
}

void Gateway::start() {
  start_access_refresh();
  // The ephemeral tick: one batch per room per tick, published outside the hub's lock.
  auto gw = impl_;
  asio::co_spawn(
      asio::make_strand(gw->runtime.impl().io),
      [gw]() -> asio::awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        auto next = std::chrono::steady_clock::now();
        for (;;) {
          next += gw->options.tick;
          timer.expires_at(next);
          auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
          for (auto& batch : gw->hub.take_eph()) gw->engine.publish_eph(std::move(batch));
          {
            std::lock_guard lock(gw->mu);
            if (gw->draining && gw->conns.empty()) co_return;
          }
        }
      },
      log_failure("gateway tick failed"));
}

void Gateway::start_access_refresh() {
  // Every project with a session here is read again each access TTL: what the access bus
  // lost (a subscriber reconnecting, a node that was away) takes effect within it.
  auto gw = impl_;
  if (!gw->access) return;
  asio::co_spawn(
      asio::make_strand(gw->runtime.impl().io),
      [gw]() -> asio::awaitable<void> {
        asio::steady_timer timer(co_await asio::this_coro::executor);
        for (;;) {
          timer.expires_after(gw->options.access.ttl);
          auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
          {
            std::lock_guard lock(gw->mu);
            if (gw->draining && gw->conns.empty()) co_return;
          }
          gw->refresh_all();
        }
      },
      log_failure("gateway access refresh failed"));
}

void Gateway::drain(std::chrono::milliseconds window, std::function<void()> on_empty) {
  std::vector<std::shared_ptr<Connection>> live;
  {
    std::lock_guard lock(impl_->mu);
    impl_->draining = true;
    impl_->on_empty = std::move(on_empty);
    for (auto& [ptr, weak] : impl_->conns) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
    if (impl_->conns.empty()) impl_->runtime.post(std::exchange(impl_->on_empty, {}));
  }
  // Spread reconnects over the first half of the window, so that the survivors are not
  // hit by every client at once and each client is back well before the deadline.
  std::mt19937_64 rng{std::random_device{}()};
  const auto spread = std::max<std::int64_t>(1, window.count() / 2);
  log::info("gateway draining",
            {{"sessions", static_cast<std::int64_t>(live.size())}, {"spread_ms", spread}});
  for (auto& c : live)
    c->drain_close(static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(spread)));
}

void Gateway::apply_access(const collab::AccessChange& change) {
  // The change as announced, at once; then the project as the database says now (changes
  // announced out of order, or one this node missed, end in the database's state).
  if (change.kind == collab::AccessChange::Kind::Notify) {  // news, not an access change
    for (auto& c : impl_->live()) c->with_session([change](Session& s) { s.apply_access(change); });
    return;
  }
  // Reads of the project that began before now may predate the change: sessions do not let
  // their answers undo it (they may arrive after the change is applied).
  const std::uint64_t known_from =
      !change.project.empty() && impl_->access ? impl_->access->announce(change.project) : 0;
  std::vector<std::weak_ptr<Connection>> in_project;
  for (auto& c : impl_->live()) {
    c->with_session([change, known_from](Session& s) { s.apply_access(change, known_from); });
    if (change.project.empty()) continue;
    if (auto s = c->session()) {
      for (const auto& p : s->projects()) {
        if (p == change.project) in_project.push_back(c);
      }
    }
  }
  if (!change.project.empty() && impl_->access &&
      (!in_project.empty() || impl_->access->holds(change.project)))
    impl_->recheck(change.project, std::move(in_project));
}

std::size_t Gateway::sessions() const {
  std::lock_guard lock(impl_->mu);
  return impl_->conns.size();
}

}  // namespace kiln::gateway
