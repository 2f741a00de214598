#include "gateway/gateway.hpp"

#include "gateway/gateway_impl.hpp"
#include "platform/http_upgrade.hpp"
#include "platform/log.hpp"
#include "platform/runtime_asio.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <random>

namespace kiln::gateway {

namespace asio = boost::asio;

Gateway::Impl::Impl(Runtime& rt, Options opts, collab::RoomEngine& eng,
                    const auth::Verifier& verifier, metrics::Registry& reg)
    : runtime(rt),
      options(std::move(opts)),
      engine(eng),
      hub(options.node),
      ctx{options, eng, hub, verifier, {}, {}, {}},
      sessions_gauge(reg.gauge("kiln_gateway_sessions", "WebSocket sessions open now.").get()),
      closes(reg.counter("kiln_gateway_closes_total",
                         "Sessions closed by the server, by close code.", {"code"})),
      frames_out(reg.counter("kiln_gateway_frames_sent_total", "Frames sent to clients.").get()),
      limit_trips(reg.counter("kiln_gateway_limit_trips_total",
                              "Requests or connections stopped by a limit.", {"limit"})) {
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
  ctx.now_unix = [] {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  ctx.defer = [&rt](std::function<void()> fn) { rt.post(std::move(fn)); };
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
  return [gw = impl_](std::unique_ptr<http::Upgrade> up) { start_connection(gw, std::move(up)); };
}

void Gateway::start() {
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
      [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("gateway tick failed", {{"error", ex.what()}});
        }
      });
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
  std::vector<std::shared_ptr<Connection>> live;
  {
    std::lock_guard lock(impl_->mu);
    for (auto& [ptr, weak] : impl_->conns) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  for (auto& c : live) c->apply_access(change);
}

std::size_t Gateway::sessions() const {
  std::lock_guard lock(impl_->mu);
  return impl_->conns.size();
}

}  // namespace kiln::gateway
