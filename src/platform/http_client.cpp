// The HTTP client's one translation unit: Beast instantiated once for every client of Kiln's
// (STYLE rule 12: compile time on two cores).

#include "platform/http_client.hpp"
#include "platform/codec.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <algorithm>
#include <random>
#include <thread>

namespace kiln::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr std::size_t kChunk = 64 * 1024;

// A connection failure: worth retrying on a new connection.
struct Dropped {
  std::string what;
};

// A file descriptor closed however the scope ends.
struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string ClientResponse::header(std::string_view name) const {
  const auto lower = codec::ascii_lower(name);
  for (const auto& [k, v] : headers)
    if (k == lower) return v;
  return {};
}

struct Client::Impl {
  explicit Impl(ClientOptions opts) : o(std::move(opts)), rng(std::random_device{}()) {
    std::string_view ep = o.endpoint;
    if (ep.starts_with("https://")) {
      tls = true;
      ep.remove_prefix(8);
    } else if (ep.starts_with("http://")) {
      ep.remove_prefix(7);
    } else {
      throw std::invalid_argument("an HTTP endpoint must be http(s)://host[:port] (got '" +
                                  o.endpoint + "')");
    }
    while (!ep.empty() && ep.back() == '/') ep.remove_suffix(1);
    if (ep.empty() || ep.find('/') != std::string_view::npos)
      throw std::invalid_argument("an HTTP endpoint must be http(s)://host[:port] (got '" +
                                  o.endpoint + "')");
    const auto colon = ep.rfind(':');
    const bool v6 = ep.starts_with('[');
    const bool has_port = colon != std::string_view::npos && (!v6 || colon > ep.rfind(']'));
    host = std::string(ep.substr(0, has_port ? colon : ep.size()));
    if (v6 && host.size() >= 2) host = host.substr(1, host.size() - 2);
    port = has_port ? std::string(ep.substr(colon + 1)) : (tls ? "443" : "80");
    authority = std::string(ep);
    if (tls) {
      ssl = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
      if (!o.ca_file.empty()) {
        ssl->load_verify_file(o.ca_file);  // throws naming the file when unreadable
      } else {
        ssl->set_default_verify_paths();  // the system's CAs (or SSL_CERT_FILE / SSL_CERT_DIR)
      }
      ssl->set_verify_mode(o.verify_tls ? asio::ssl::verify_peer : asio::ssl::verify_none);
    }
  }

  ClientOptions o;
  std::string host, port, authority;
  bool tls = false;
  asio::io_context io;
  std::unique_ptr<asio::ssl::context> ssl;
  // One connection at a time: plain, or TLS over TCP.
  std::unique_ptr<beast::tcp_stream> stream;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_stream;
  beast::flat_buffer buffer;
  std::mt19937_64 rng;

  // Runs the io_context until the pending operation completes (tcp_stream enforces timeouts).
  void run() {
    io.restart();
    io.run();
  }

  [[nodiscard]] bool connected() const { return tls ? tls_stream != nullptr : stream != nullptr; }
  void drop() {
    stream.reset();
    tls_stream.reset();
  }
  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls_stream) : *stream; }

  void connect() {
    tcp::resolver resolver(io);
    error_code ec;
    auto results = resolver.resolve(host, port, ec);
    if (ec) throw Dropped{"resolve " + host + ": " + ec.message()};
    if (tls) {
      tls_stream = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(io, *ssl);
      SSL_set_tlsext_host_name(tls_stream->native_handle(), host.c_str());  // SNI
      tls_stream->set_verify_callback(asio::ssl::host_name_verification(host));
    } else {
      stream = std::make_unique<beast::tcp_stream>(io);
    }
    lowest().expires_after(o.timeout);
    lowest().async_connect(results, [&](error_code e, const tcp::endpoint&) { ec = e; });
    run();
    if (ec) {
      drop();
      throw Dropped{"connect " + authority + ": " + ec.message()};
    }
    lowest().socket().set_option(tcp::no_delay(true), ec);
    if (tls) {
      tls_stream->async_handshake(asio::ssl::stream_base::client, [&](error_code e) { ec = e; });
      run();
      if (ec) {
        drop();
        throw Dropped{"TLS handshake with " + authority + ": " + ec.message()};
      }
    }
    buffer.clear();
    buffer.reserve(kChunk);  // Beast reads at most the free capacity: room for whole chunks
  }

  ClientResponse once(const ClientRequest& r, int file, bool& streamed) {
    if (!connected()) connect();
    return tls ? exchange(*tls_stream, r, file, streamed) : exchange(*stream, r, file, streamed);
  }

  // Writes the head, then the body (from `file` when the body is a file range).
  template <class Stream>
  void write_request(Stream& conn, const ClientRequest& r, int file) {
    bhttp::request<bhttp::buffer_body> req{bhttp::string_to_verb(r.method), r.target, 11};
    bool host_given = false;
    for (const auto& [k, v] : r.headers) {
      req.insert(k, v);
      host_given = host_given || codec::ascii_lower(k) == "host";
    }
    if (!host_given) req.set(bhttp::field::host, authority);
    if (req.find(bhttp::field::user_agent) == req.end())
      req.set(bhttp::field::user_agent, o.user_agent);
    req.keep_alive(true);
    const std::uint64_t length = r.body.size();
    if (r.method == "PUT" || r.method == "POST" || r.method == "PATCH" || length > 0)
      req.content_length(length);
    req.body().data = nullptr;
    req.body().more = length > 0;

    error_code ec;
    bhttp::request_serializer<bhttp::buffer_body> ser{req};
    lowest().expires_after(o.timeout);
    bhttp::async_write_header(conn, ser, [&](error_code e, std::size_t) { ec = e; });
    run();
    if (ec) throw Dropped{"write: " + ec.message()};
    auto send = [&](const char* data, std::size_t n, bool more) {
      req.body().data = const_cast<char*>(data);
      req.body().size = n;
      req.body().more = more;
      lowest().expires_after(o.timeout);
      bhttp::async_write(conn, ser, [&](error_code e, std::size_t) { ec = e; });
      run();
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) throw Dropped{"write body: " + ec.message()};
    };
    if (r.body.from_file()) {
      std::string chunk(kChunk, '\0');
      std::uint64_t off = r.body.offset, left = r.body.length;
      while (left > 0) {
        const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk));
        const ssize_t n = ::pread(file, chunk.data(), want, static_cast<off_t>(off));
        if (n <= 0) {
          drop();  // half a body was sent: this connection is unusable
          throw NetworkError("cannot read " + r.body.file + " at byte " + std::to_string(off));
        }
        off += static_cast<std::uint64_t>(n);
        left -= static_cast<std::uint64_t>(n);
        send(chunk.data(), static_cast<std::size_t>(n), left > 0);
      }
    } else if (length > 0) {
      send(r.body.bytes.data(), r.body.bytes.size(), false);
    }
  }

  // One request and its response on an open connection.
  template <class Stream>
  ClientResponse exchange(Stream& conn, const ClientRequest& r, int file, bool& streamed) {
    write_request(conn, r, file);
    error_code ec;
    bhttp::response_parser<bhttp::buffer_body> parser;
    parser.body_limit(boost::none);
    if (r.method == "HEAD") parser.skip(true);
    lowest().expires_after(o.timeout);
    bhttp::async_read_header(conn, buffer, parser, [&](error_code e, std::size_t) { ec = e; });
    run();
    if (ec) throw Dropped{"read: " + ec.message()};
    ClientResponse out;
    out.status = static_cast<int>(parser.get().result_int());
    for (const auto& f : parser.get())
      out.headers.emplace_back(codec::ascii_lower(f.name_string()), std::string(f.value()));
    const bool to_sink = r.sink != nullptr && out.status / 100 == 2;
    std::string chunk(kChunk, '\0');
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      lowest().expires_after(o.timeout);
      bhttp::async_read(conn, buffer, parser, [&](error_code e, std::size_t) { ec = e; });
      run();
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) throw Dropped{"read body: " + ec.message()};
      const auto got = chunk.size() - parser.get().body().size;
      if (to_sink) {
        if (got > 0) streamed = true;
        (*r.sink)(std::string_view(chunk.data(), got));
      } else {
        if (out.body.size() + got > o.max_body) {
          drop();  // the rest of the body is still on the wire
          throw NetworkError("HTTP " + std::to_string(out.status) + " from " + authority +
                             ": a response body over " + std::to_string(o.max_body) + " bytes");
        }
        out.body.append(chunk.data(), got);
      }
    }
    if (!parser.get().keep_alive()) drop();
    return out;
  }

  ClientResponse send(const ClientRequest& r) {
    if (!r.target.starts_with('/'))
      throw std::invalid_argument("an HTTP request target must start with '/' (got '" + r.target +
                                  "')");
    // A file body is opened before anything is sent, once for every attempt (pread).
    Fd file(-1);
    if (r.body.from_file()) {
      file.fd = ::open(r.body.file.c_str(), O_RDONLY | O_CLOEXEC);
      if (file.fd < 0) throw NetworkError("cannot open " + r.body.file);
    }
    const int attempts = r.retry ? std::max(o.max_attempts, 1) : 1;
    for (int attempt = 1;; ++attempt) {
      bool streamed = false;
      try {
        auto out = once(r, file.fd, streamed);
        const bool retryable = out.status >= 500 || out.status == 429;
        if (!retryable || attempt >= attempts || streamed) return out;
      } catch (const Dropped& e) {
        drop();
        if (attempt >= attempts || streamed)
          throw NetworkError(e.what + (attempt > 1
                                           ? " (after " + std::to_string(attempt) + " attempts)"
                                           : std::string()));
      } catch (...) {
        drop();  // a sink that threw, a file that failed: the exchange is half done
        throw;
      }
      pause(attempt);
    }
  }

  void pause(int attempt) {
    const auto base = o.backoff.count() << std::min(attempt - 1, 6);
    std::uniform_int_distribution<std::int64_t> jitter(base / 2, base);
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
  }
};

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

ClientResponse Client::send(const ClientRequest& request) {
  return impl_->send(request);
}

const std::string& Client::authority() const {
  return impl_->authority;
}

bool Client::tls() const {
  return impl_->tls;
}

}  // namespace kiln::http
