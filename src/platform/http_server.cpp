// Listening, connections, drain, and routed requests (buffered bodies). One of the two
// translation units that instantiate Beast's HTTP operations (http_server_impl.hpp).
#include "platform/http_server_impl.hpp"

namespace kiln::http {

Server::Server(Runtime& runtime, ServerOptions options, Router router, metrics::Registry& registry)
    : impl_(std::make_shared<Impl>(runtime, std::move(options), std::move(router), nullptr,
                                   registry)) {}

Server::Server(Runtime& runtime, ServerOptions options, StreamHandler& handler,
               metrics::Registry& registry)
    : impl_(std::make_shared<Impl>(runtime, std::move(options), Router{}, &handler, registry)) {}

Server::~Server() = default;

void Server::add_upgrade(std::string path, UpgradeHandler handler) {
  impl_->upgrades.emplace_back(std::move(path), std::move(handler));
}

void Server::start() {
  auto& io = impl_->runtime.impl().io;
  std::string host = impl_->options.host;
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  tcp::resolver resolver(io);
  error_code ec;
  auto results =
      resolver.resolve(host, std::to_string(impl_->options.port), tcp::resolver::passive, ec);
  const std::string where = impl_->options.host + ":" + std::to_string(impl_->options.port);
  if (ec || results.empty()) {
    throw std::runtime_error("cannot resolve listen address " + where + ": " + ec.message());
  }
  auto endpoint = results.begin()->endpoint();
  auto& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + where + ": " + ec.message());
  impl_->bound_port = a.local_endpoint().port();
  asio::co_spawn(impl_->accept_strand, impl_->accept_loop(),
                 [](std::exception_ptr e) { log::exception(e, "http accept loop failed"); });
}

std::uint16_t Server::port() const {
  return impl_->bound_port;
}

std::size_t Server::open_connections() const {
  std::lock_guard lock(impl_->mu);
  return impl_->conns.size();
}

void Server::drain(std::function<void()> on_empty) {
  auto self = impl_;
  self->draining.store(true);
  asio::post(self->accept_strand, [self] {
    error_code ignored;
    self->acceptor.close(ignored);
    log::info("stopped accepting new connections");
  });
  std::vector<std::shared_ptr<Connection>> snapshot;
  {
    std::lock_guard lock(self->mu);
    self->on_empty = std::move(on_empty);
    for (const auto& [id, c] : self->conns) snapshot.push_back(c);
    if (self->conns.empty()) {
      asio::post(self->runtime.impl().io, std::exchange(self->on_empty, {}));
    }
  }
  // Idle keep-alive connections close now; busy ones finish their request first.
  for (auto& c : snapshot) {
    asio::post(c->executor, [c] {
      if (c->idle && !c->upgraded) c->stream.cancel();
    });
  }
}

void Server::close_all() {
  std::vector<std::shared_ptr<Connection>> snapshot;
  {
    std::lock_guard lock(impl_->mu);
    for (const auto& [id, c] : impl_->conns) snapshot.push_back(c);
  }
  for (auto& c : snapshot) {
    asio::post(c->executor, [c] {
      if (!c->upgraded) c->stream.close();
    });
  }
}

void Server::Impl::forget(std::uint64_t id) {
  std::function<void()> done;
  {
    std::lock_guard lock(mu);
    conns.erase(id);
    if (draining.load() && conns.empty() && on_empty) done = std::exchange(on_empty, {});
  }
  open.dec();
  if (done) asio::post(runtime.impl().io, std::move(done));
}

asio::awaitable<void> Server::Impl::accept_loop() {
  auto self = shared_from_this();
  auto& io = runtime.impl().io;
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(asio::make_strand(io), nothrow);
    if (draining.load()) co_return;
    if (ec) {
      if (ec == asio::error::operation_aborted) co_return;
      // Out of descriptors or a transient network error: back off briefly, keep serving.
      log::warn("http accept failed", {{"error", ec.message()}});
      rejected.with({"accept_error"}).inc();
      asio::steady_timer pause(accept_strand, std::chrono::milliseconds(50));
      co_await pause.async_wait(nothrow);
      continue;
    }
    if (stream == nullptr) accepted.inc();
    // Small frames (acks, cursors) must leave at once: Nagle's algorithm with delayed ACKs
    // holds them up to 40 ms.
    error_code nodelay_ec;
    socket.set_option(tcp::no_delay(true), nodelay_ec);
    std::uint64_t id = 0;
    std::shared_ptr<Connection> conn;
    {
      std::lock_guard lock(mu);
      if (conns.size() >= options.max_connections) {
        if (stream != nullptr) continue;  // a streamed listener (S3) closes it unanswered
        rejected.with({"max_connections"}).inc();
        auto ex = socket.get_executor();
        asio::co_spawn(ex, refuse(std::move(socket)),
                       [](std::exception_ptr e) { log::exception(e, "http refuse failed"); });
        continue;
      }
      id = ++next_id;
      conn = std::make_shared<Connection>(std::move(socket));
      conns.emplace(id, conn);
    }
    open.inc();
    asio::co_spawn(conn->executor, stream != nullptr ? stream_session(conn) : session(id, conn),
                   [self, id](std::exception_ptr e) {
                     log::exception(e, "http session failed");
                     self->forget(id);
                   });
  }
}

asio::awaitable<void> Server::Impl::refuse(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  stream.expires_after(std::chrono::seconds(1));
  auto problem = Response::problem(503, "https://kiln.dev/problems/busy", "Service Unavailable",
                                   "Too many open connections; retry shortly.");
  bhttp::response<bhttp::string_body> res{bhttp::status::service_unavailable, 11};
  res.set(bhttp::field::content_type, problem.content_type);
  res.set(bhttp::field::retry_after, "1");
  res.set(bhttp::field::connection, "close");
  res.body() = std::move(problem.body);
  res.prepare_payload();
  co_await bhttp::async_write(stream, res, nothrow);
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

std::optional<std::pair<Response, std::string>> Server::Impl::decide_from_header(
    const bhttp::request<bhttp::string_body>& breq, const std::string& remote) {
  Request req = request_of(breq, remote);
  if (cors_preflight(req, options.cors_origins)) return std::nullopt;
  if (beast::websocket::is_upgrade(breq)) return std::nullopt;
  auto m = router.match(req.method, req.path);
  std::optional<Response> early;
  if (m.handler == nullptr && m.async_handler == nullptr) {
    std::string route;
    early = dispatch(req, route);  // 404 or 405
  } else if (router.header_check()) {
    req.params = std::move(m.params);
    early = router.header_check()(req);
  }
  if (!early) return std::nullopt;
  add_cors(req, *early, options.cors_origins);
  early->headers.emplace_back("X-Request-Id", req.request_id);
  return std::pair{std::move(*early), m.route};
}

Response Server::Impl::dispatch(const Request& req, std::string& route) {
  auto m = router.match(req.method, req.path);
  route = m.route;
  if (m.handler == nullptr) {
    if (m.method_not_allowed) {
      auto r = Response::problem(405, "https://kiln.dev/problems/method-not-allowed",
                                 "Method Not Allowed", "This path accepts: " + m.allow);
      r.headers.emplace_back("Allow", m.allow);
      return r;
    }
    return Response::problem(404, "https://kiln.dev/problems/not-found", "Not Found",
                             "No route for this path.");
  }
  try {
    return (*m.handler)(req);
  } catch (const std::exception& e) {
    log::error("http handler failed",
               {{"request_id", req.request_id}, {"route", route}, {"error", e.what()}});
    return Response::problem(500, "https://kiln.dev/problems/internal", "Internal Server Error",
                             "The server failed; the request id identifies it in the logs.");
  }
}

// Runs an async handler and waits (on this connection's strand, not blocking it) for its
// answer, at most the request timeout.
asio::awaitable<Response> Server::Impl::call_async(const AsyncHandler& handler,
                                                   const Request& req) {
  auto ex = co_await asio::this_coro::executor;
  auto timer = std::make_shared<asio::steady_timer>(ex, options.request_timeout);
  auto slot = std::make_shared<std::optional<Response>>();
  auto answered = std::make_shared<std::atomic<bool>>(false);
  try {
    handler(req, [ex, timer, slot, answered](Response r) {
      if (answered->exchange(true)) return;
      // post, never inline: the coroutine is suspended on the timer before this runs.
      asio::post(ex, [timer, slot, r = std::move(r)]() mutable {
        *slot = std::move(r);
        timer->cancel();
      });
    });
  } catch (const std::exception& e) {
    answered->store(true);
    log::error("http handler failed", {{"request_id", req.request_id}, {"error", e.what()}});
    co_return Response::problem(500, "https://kiln.dev/problems/internal", "Internal Server Error",
                                "The server failed; the request id identifies it in the logs.");
  }
  co_await timer->async_wait(nothrow);
  if (!*slot) {
    answered->store(true);
    co_return Response::problem(503, "https://kiln.dev/problems/timeout", "Service Unavailable",
                                "The request took too long to answer; retry later.");
  }
  co_return std::move(**slot);
}

asio::awaitable<void> Server::Impl::answer_and_linger(Connection& c, beast::flat_buffer& buffer,
                                                      int status, std::string_view reason) {
  rejected.with({std::string(reason)}).inc();
  co_await close_with(
      c, buffer,
      // The problem type spells the metric's reason with hyphens, as every other type.
      Response::problem(status, "https://kiln.dev/problems/" + hyphenated(reason),
                        std::string(http::reason(status)),
                        "The request was refused before routing: " + std::string(reason) + "."),
      "unmatched", "other");
}

asio::awaitable<void> Server::Impl::close_with(Connection& c, beast::flat_buffer& buffer,
                                               Response resp, const std::string& route,
                                               const std::string& method) {
  requests.with({route, method, std::to_string(resp.status)}).inc();
  bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(resp.status), 11};
  res.set(bhttp::field::server, "kiln");
  res.set(bhttp::field::content_type, resp.content_type);
  for (const auto& [k, v] : resp.headers) res.set(k, v);
  res.set(bhttp::field::connection, "close");
  res.body() = std::move(resp.body);
  res.prepare_payload();
  c.stream.expires_after(options.request_timeout);
  auto [wec, wn] = co_await bhttp::async_write(c.stream, res, nothrow);
  if (wec) co_return;
  error_code ignored;
  c.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  std::size_t discarded = 0;
  c.stream.expires_after(kLingerTime);
  while (discarded < kLingerBytes) {
    buffer.clear();
    auto [rec, n] = co_await c.stream.async_read_some(buffer.prepare(64 * 1024), nothrow);
    if (rec) break;
    discarded += n;
  }
}

asio::awaitable<void> Server::Impl::session(std::uint64_t /*id*/, std::shared_ptr<Connection> c) {
  beast::flat_buffer buffer;
  std::string remote;
  {
    error_code ec;
    auto ep = c->stream.socket().remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  for (;;) {
    // Idle: wait for the first bytes of the next request.
    c->idle = true;
    if (buffer.size() == 0) {
      if (draining.load()) break;
      c->stream.expires_after(options.idle_timeout);
      auto [ec, n] = co_await c->stream.async_read_some(buffer.prepare(4096), nothrow);
      if (ec) break;  // idle timeout, peer closed, or cancelled by a drain
      buffer.commit(n);
    }
    c->idle = false;
    GaugeHold busy(in_progress);

    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
    parser.body_limit(options.max_body_bytes);
    // tcp_stream's own timeout closes the socket, which would leave no way to answer 408:
    // a separate timer cancels the read instead.
    c->stream.expires_never();
    bool timed_out = false;
    asio::steady_timer deadline(c->stream.get_executor(), options.request_timeout);
    deadline.async_wait([&c, &timed_out](const error_code& tec) {
      if (tec) return;
      timed_out = true;
      c->stream.cancel();
    });
    // The header section first: a body is read only once its framing is unambiguous
    // (RFC 9112 section 6: no request smuggling), and a client that sent
    // `Expect: 100-continue` is told to go on (or refused at once) before it sends it.
    auto [ec, n] = co_await bhttp::async_read_header(c->stream, buffer, parser, nothrow);
    if (!ec) {
      std::vector<std::pair<std::string_view, std::string_view>> fields;
      for (const auto& f : parser.get()) fields.emplace_back(f.name_string(), f.value());
      if (auto bad = framing_error(fields)) {
        deadline.cancel();
        log::info("http request refused",
                  {{"remote", remote}, {"status", bad->status}, {"reason", bad->reason}});
        co_await answer_and_linger(*c, buffer, bad->status, "framing");
        break;
      }
      if (!parser.is_done()) {
        // A body follows: what the header section decides (no route, a bad credential, a
        // type the route does not take, too large) is answered before any of it is read.
        const auto length = parser.content_length();
        if (length && *length > options.max_body_bytes) {
          deadline.cancel();
          co_await answer_and_linger(*c, buffer, 413, "body_too_large");
          break;
        }
        if (auto early = decide_from_header(parser.get(), remote)) {
          deadline.cancel();
          co_await close_with(*c, buffer, std::move(early->first), early->second,
                              method_label(std::string(parser.get().method_string())));
          break;
        }
        if (beast::iequals(parser.get()[bhttp::field::expect], "100-continue")) {
          bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
          auto [cec, cn] = co_await bhttp::async_write(c->stream, cont, nothrow);
          if (cec) break;
        }
        std::tie(ec, n) = co_await bhttp::async_read(c->stream, buffer, parser, nothrow);
      }
    }
    deadline.cancel();
    if (ec) {
      auto failure = timed_out ? ReadFailure{408, "timeout"} : classify(ec);
      if (failure.status != 0) {
        log::info("http request refused",
                  {{"remote", remote}, {"status", failure.status}, {"reason", failure.reason}});
        co_await answer_and_linger(*c, buffer, failure.status, failure.reason);
      }
      break;
    }
    const auto started = std::chrono::steady_clock::now();
    auto& breq = parser.get();

    if (beast::websocket::is_upgrade(breq)) {
      const std::string_view target = breq.target();
      const auto path = target.substr(0, target.find('?'));
      auto it = std::find_if(upgrades.begin(), upgrades.end(),
                             [&](const auto& u) { return u.first == path; });
      if (it != upgrades.end() && !draining.load()) {
        auto up = std::unique_ptr<Upgrade>(
            new Upgrade{std::move(c->stream), parser.release(), {}, remote});
        up->request_id = accept_or_make_request_id(std::nullopt);
        c->upgraded = true;
        // Labelled by the route's name, as every other request (not by the raw path).
        const auto named = router.match("GET", std::string(path)).route;
        requests.with({named.empty() ? std::string("upgrade") : named, "GET", "101"}).inc();
        it->second(std::move(up));
        co_return;
      }
    }

    Request req = request_of(breq, remote);
    req.body = std::move(breq.body());

    std::string route;
    Response resp;
    auto m = router.match(req.method, req.path);
    if (auto preflight = cors_preflight(req, options.cors_origins)) {
      route = "cors_preflight";
      resp = std::move(*preflight);
    } else if (m.async_handler != nullptr) {
      route = m.route;
      req.params = std::move(m.params);
      resp = co_await call_async(*m.async_handler, req);
    } else {
      req.params = std::move(m.params);
      resp = dispatch(req, route);
    }
    add_cors(req, resp, options.cors_origins);
    const bool keep_alive = breq.keep_alive() && !draining.load();

    bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(resp.status),
                                            breq.version()};
    res.set(bhttp::field::server, "kiln");
    res.set(bhttp::field::content_type, resp.content_type);
    res.set("X-Request-Id", req.request_id);
    for (const auto& [k, v] : resp.headers) res.set(k, v);
    if (req.method == "HEAD") {
      res.content_length(resp.body.size());
    } else {
      res.body() = std::move(resp.body);
      res.prepare_payload();
    }
    res.keep_alive(keep_alive);

    // Counted before the answer leaves: a client that has its answer sees it counted.
    requests.with({route, method_label(req.method), std::to_string(resp.status)}).inc();
    c->stream.expires_after(options.request_timeout);
    auto [wec, wn] = co_await bhttp::async_write(c->stream, res, nothrow);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    duration.with({route}).observe(seconds);
    if (options.access_log) {
      log::info("http request",
                {{"request_id", req.request_id},
                 {"method", req.method},
                 {"path", req.path},
                 {"route", route},
                 {"status", resp.status},
                 {"duration_ms", std::round(seconds * 1e6) / 1e3},  // microsecond precision
                 {"remote", remote}});
    }
    if (wec || !keep_alive) break;
  }
  error_code ignored;
  c->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  c->stream.close();
}

}  // namespace kiln::http
