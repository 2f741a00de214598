// Streamed requests (http_stream.hpp): the header section first, then the body in 64 KiB
// pieces to the handler's sink, the answer's body from its source in 64 KiB pieces. One of
// the two translation units that instantiate Beast's HTTP operations.
#include "platform/http_framing.hpp"
#include "platform/http_server_impl.hpp"
#include "platform/ids.hpp"

namespace kiln::http {
namespace {

constexpr std::size_t kChunk = 64 * 1024;

Request head_of(const bhttp::request<bhttp::buffer_body>& req, const std::string& remote) {
  Request r;
  r.method = std::string(req.method_string());
  r.target = std::string(req.target());
  const auto q = r.target.find('?');
  r.path = r.target.substr(0, q);
  if (q != std::string::npos) r.query = r.target.substr(q + 1);
  for (const auto& f : req)
    r.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  r.remote = remote;
  r.request_id = ids::random_hex(8);
  return r;
}

}  // namespace

// After an answer to a request whose bytes were not all read: stop sending, then read and
// discard a bounded amount, so that closing does not reset the connection (and destroy the
// answer) before the client has read it.
asio::awaitable<void> Server::Impl::linger(Connection& c, beast::flat_buffer& buffer) {
  error_code ignored;
  c.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  std::size_t discarded = 0;
  c.stream.expires_after(std::chrono::seconds(2));
  while (discarded < (8u << 20)) {
    buffer.clear();
    auto [rec, n] = co_await c.stream.async_read_some(buffer.prepare(kChunk), nothrow);
    if (rec) break;
    discarded += n;
  }
}

// Writes an answer: the headers, then its body or its source's bytes, streamed. False when
// the connection failed (or the source could not give what the length promised).
asio::awaitable<bool> Server::Impl::send_answer(Connection& c, StreamAnswer a, const Request& head,
                                                bool keep_alive) {
  stream->finish(head, a);
  const bool is_head = head.method == "HEAD";
  const bool from_source = a.source != nullptr && !a.head_only && !is_head;
  bhttp::response<bhttp::buffer_body> res{static_cast<bhttp::status>(a.status), 11};
  res.set(bhttp::field::server, "kiln");
  for (const auto& [k, v] : a.headers) {
    // Never a header line the value could split (RFC 9110 section 5.5); the handlers
    // validate what they echo, this is the last guard.
    if (v.find_first_of("\r\n") != std::string::npos) {
      log::error("http: dropped a response header with CR or LF",
                 {{"request_id", head.request_id}, {"header", k}});
      continue;
    }
    res.set(k, v);
  }
  res.keep_alive(keep_alive && !a.close);
  if (a.source != nullptr || a.length > 0) {
    res.content_length(a.length);
  } else {
    res.content_length(is_head || a.head_only ? 0 : a.body.size());
  }
  res.body().data = nullptr;
  res.body().more = from_source || (!is_head && !a.head_only && !a.body.empty());
  bhttp::response_serializer<bhttp::buffer_body> sr{res};
  c.stream.expires_after(options.io_timeout);
  auto [hec, hn] = co_await bhttp::async_write_header(c.stream, sr, nothrow);
  if (hec) co_return false;
  auto send = [&](const char* data, std::size_t size, bool more) -> asio::awaitable<bool> {
    res.body().data = const_cast<char*>(data);
    res.body().size = size;
    res.body().more = more;
    c.stream.expires_after(options.io_timeout);
    auto [ec, n] = co_await bhttp::async_write(c.stream, sr, nothrow);
    if (ec == bhttp::error::need_buffer) ec = {};
    bytes_out->inc(size);
    co_return !ec;
  };
  bool ok = true;
  if (from_source) {
    std::string buf(kChunk, '\0');
    std::uint64_t left = a.length;
    while (ok && left > 0) {
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk));
      const auto n = a.source->read(buf.data(), want);
      if (n == 0) {
        ok = false;  // the length was promised: cut the connection
        break;
      }
      left -= n;
      ok = co_await send(buf.data(), n, left > 0);
    }
    if (ok && left == 0 && !sr.is_done()) ok = co_await send(nullptr, 0, false);
  } else if (!is_head && !a.head_only && !a.body.empty()) {
    ok = co_await send(a.body.data(), a.body.size(), false);
  }
  co_return ok;
}

asio::awaitable<void> Server::Impl::stream_session(std::shared_ptr<Connection> conn) {
  auto& c = *conn;
  beast::flat_buffer buffer;
  std::string remote;
  {
    error_code ec;
    auto ep = c.stream.socket().remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  auto count = [this](const std::string& method, int status) {
    stream_requests->with({method_label(method), std::to_string(status)}).inc();
  };
  for (;;) {
    bhttp::request_parser<bhttp::buffer_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
    parser.body_limit(boost::none);  // the handler's limits apply, piece by piece
    if (draining.load() && buffer.size() == 0) break;
    c.idle = true;
    c.stream.expires_after(options.idle_timeout);
    auto [hec, hn] = co_await bhttp::async_read_header(c.stream, buffer, parser, nothrow);
    c.idle = false;
    // A header section too large or malformed (not a client that went away): say so, then
    // close.
    const bool refused_head =
        hec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
        hec != bhttp::error::end_of_stream && hec != bhttp::error::partial_message;
    // A request refused before its head was read has only an id.
    auto unread = [] {
      Request r;
      r.request_id = ids::random_hex(8);
      return r;
    };
    if (refused_head) {
      const bool big = hec == bhttp::error::header_limit;
      auto a = stream->refused(400, big ? "header_too_large" : "malformed");
      count("other", a.status);
      const auto h = unread();
      if (co_await send_answer(c, std::move(a), h, false)) co_await linger(c, buffer);
      break;
    }
    if (hec) break;
    auto& req = parser.get();
    {
      // Unambiguous framing before any body byte is read (RFC 9112 section 6).
      std::vector<std::pair<std::string_view, std::string_view>> fields;
      for (const auto& f : req) fields.emplace_back(f.name_string(), f.value());
      if (auto bad = framing_error(fields)) {
        auto a = stream->refused(bad->status, bad->reason);
        count("other", a.status);
        const auto h = unread();
        if (co_await send_answer(c, std::move(a), h, false)) co_await linger(c, buffer);
        break;
      }
    }
    const Request head = head_of(req, remote);
    bool keep_alive = req.keep_alive() && !draining.load();
    auto begun = stream->begin(head);
    StreamAnswer answer;
    bool body_left = !parser.is_done();
    if (auto* sink = std::get_if<std::unique_ptr<BodySink>>(&begun)) {
      if (beast::iequals(req[bhttp::field::expect], "100-continue")) {
        bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
        auto [cec, cn] = co_await bhttp::async_write(c.stream, cont, nothrow);
        if (cec) break;
      }
      std::string buf(kChunk, '\0');
      // Beast reads at most the buffer's free capacity (at least 512 bytes) per call:
      // without room for a whole piece, a body arrives in ~1 KiB reads, each a syscall, an
      // epoll round and a timer reset (a single PUT ran at a third of the speed).
      buffer.reserve(kChunk);
      bool failed_io = false;
      bool refused = false;
      while (!parser.is_done()) {
        req.body().data = buf.data();
        req.body().size = buf.size();
        c.stream.expires_after(options.io_timeout);
        auto [ec, n] = co_await bhttp::async_read(c.stream, buffer, parser, nothrow);
        if (ec == bhttp::error::need_buffer) ec = {};
        if (ec) {
          failed_io = true;  // the client went away: the sink publishes nothing
          break;
        }
        const auto got = buf.size() - req.body().size;
        bytes_in->inc(got);
        if (!(*sink)->write(std::string_view(buf.data(), got))) {
          refused = true;
          break;
        }
      }
      if (failed_io) break;
      answer = (*sink)->finish();
      body_left = !parser.is_done();
      if (refused && body_left) keep_alive = false;  // unread body: close after answering
    } else {
      answer = std::get<StreamAnswer>(std::move(begun));
      // A body nobody wants (an error before the upload): do not read it, close after.
      if (body_left) keep_alive = false;
    }
    if (answer.close || draining.load()) keep_alive = false;  // a drain answers with close
    count(head.method, answer.status);
    const bool ok = co_await send_answer(c, std::move(answer), head, keep_alive);
    // The client may still be sending the body that was refused.
    if (ok && body_left) co_await linger(c, buffer);
    if (!ok || !keep_alive || body_left) break;
  }
  error_code ignored;
  c.stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  c.stream.close();
}

}  // namespace kiln::http
