// The one translation unit of the S3 client that instantiates Beast (compile time on two
// cores: STYLE rule 12), hence over 500 lines: the transport and the S3 operations on it. It
// splits when the transport becomes the general HTTP client (issue #16, move 5b).

#include "clients/s3/client.hpp"
#include "platform/codec.hpp"

#include "clients/s3/xml.hpp"

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

#include <map>
#include <random>
#include <thread>

namespace kiln::s3 {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr std::size_t kChunk = 64 * 1024;

// A connection failure: worth retrying on a new connection.
struct NetworkError {
  std::string what;
};

}  // namespace

struct Client::Impl {
  explicit Impl(ClientOptions opts) : o(std::move(opts)), rng(std::random_device{}()) {
    std::string_view ep = o.endpoint;
    if (ep.starts_with("https://")) {
      tls = true;
      ep.remove_prefix(8);
    } else if (ep.starts_with("http://")) {
      ep.remove_prefix(7);
    } else {
      throw std::invalid_argument("S3 endpoint must be http(s)://host[:port] (got '" + o.endpoint +
                                  "')");
    }
    while (!ep.empty() && ep.back() == '/') ep.remove_suffix(1);
    const auto colon = ep.rfind(':');
    host = std::string(ep.substr(0, colon));
    port =
        colon == std::string_view::npos ? (tls ? "443" : "80") : std::string(ep.substr(colon + 1));
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

  struct Reply {
    int status = 0;
    std::map<std::string, std::string> headers;  // lowercase names
    std::string body;                            // unless streamed to a sink
  };

  struct Call {
    std::string method;
    std::string bucket;
    std::string key;
    std::string query;  // canonical order is the signer's business
    std::vector<std::pair<std::string, std::string>> headers;
    Body body;
    const std::function<void(std::string_view)>* sink = nullptr;  // 2xx bodies go here
    std::string raw_target;  // not empty: sent as is, unsigned (send_unsigned)
    bool throw_on_error = true;
  };

  std::string target(const Call& c, std::string& host_header) const {
    std::string path;
    if (o.path_style || c.bucket.empty()) {
      host_header = authority;
      path = "/" + c.bucket;
      if (!c.key.empty()) path += "/" + uri_encode(c.key, true);
    } else {
      host_header = c.bucket + "." + authority;
      path = "/" + uri_encode(c.key, true);
    }
    return path;
  }

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
    if (ec) throw NetworkError{"resolve " + host + ": " + ec.message()};
    if (tls) {
      tls_stream = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(io, *ssl);
      // SNI, and the certificate must name the host.
      SSL_set_tlsext_host_name(tls_stream->native_handle(), host.c_str());
      tls_stream->set_verify_callback(asio::ssl::host_name_verification(host));
    } else {
      stream = std::make_unique<beast::tcp_stream>(io);
    }
    lowest().expires_after(o.timeout);
    lowest().async_connect(results, [&](error_code e, const tcp::endpoint&) { ec = e; });
    run();
    if (ec) {
      drop();
      throw NetworkError{"connect " + authority + ": " + ec.message()};
    }
    lowest().socket().set_option(tcp::no_delay(true), ec);
    if (tls) {
      tls_stream->async_handshake(asio::ssl::stream_base::client, [&](error_code e) { ec = e; });
      run();
      if (ec) {
        drop();
        throw NetworkError{"TLS handshake with " + authority + ": " + ec.message()};
      }
    }
    buffer.clear();
    buffer.reserve(kChunk);  // Beast reads at most the free capacity: room for whole chunks
  }

  Reply once(const Call& c) {
    if (!connected()) connect();
    return tls ? exchange(*tls_stream, c) : exchange(*stream, c);
  }

  // One request and its response on an open connection.
  template <class Stream>
  Reply exchange(Stream& conn, const Call& c) {
    std::string host_header;
    const bool raw = !c.raw_target.empty();
    const auto path = raw ? c.raw_target : target(c, host_header);
    if (raw) host_header = authority;
    const auto date = amz_date(std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
    const bool from_file = !c.body.file.empty();
    const std::string payload =
        from_file ? std::string(kUnsignedPayload) : codec::sha256_hex(c.body.bytes);
    Request sr{c.method,
               path,
               c.query,
               {{"Host", host_header}, {"x-amz-date", date}, {"x-amz-content-sha256", payload}},
               payload};
    if (!o.credentials.session_token.empty())
      sr.headers.emplace_back("x-amz-security-token", o.credentials.session_token);
    if (raw) sr.headers = {{"Host", host_header}};
    for (const auto& h : c.headers) sr.headers.push_back(h);
    const Scope scope{date.substr(0, 8), o.region, "s3"};

    bhttp::request<bhttp::buffer_body> req{bhttp::string_to_verb(c.method),
                                           path + (c.query.empty() ? "" : "?" + c.query), 11};
    for (const auto& [k, v] : sr.headers) req.set(k, v);
    if (!raw)
      req.set(bhttp::field::authorization,
              authorization(o.credentials, scope, date, sr, Options{false, false}));
    req.set(bhttp::field::user_agent, "kiln-s3");
    req.keep_alive(true);
    const std::uint64_t length = from_file ? c.body.length : c.body.bytes.size();
    if (c.method == "PUT" || c.method == "POST" || length > 0) req.content_length(length);
    req.body().data = nullptr;
    req.body().more = length > 0;

    error_code ec;
    bhttp::request_serializer<bhttp::buffer_body> ser{req};
    lowest().expires_after(o.timeout);
    bhttp::async_write_header(conn, ser, [&](error_code e, std::size_t) { ec = e; });
    run();
    if (ec) throw NetworkError{"write: " + ec.message()};
    auto send = [&](const char* data, std::size_t n, bool more) {
      req.body().data = const_cast<char*>(data);
      req.body().size = n;
      req.body().more = more;
      lowest().expires_after(o.timeout);
      bhttp::async_write(conn, ser, [&](error_code e, std::size_t) { ec = e; });
      run();
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) throw NetworkError{"write body: " + ec.message()};
    };
    if (from_file) {
      int fd = ::open(c.body.file.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw S3Error(0, "LocalFile", "cannot open " + c.body.file);
      std::string chunk(kChunk, '\0');
      std::uint64_t off = c.body.offset, left = c.body.length;
      try {
        while (left > 0) {
          const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(left, kChunk));
          const ssize_t n = ::pread(fd, chunk.data(), want, static_cast<off_t>(off));
          if (n <= 0) throw S3Error(0, "LocalFile", "cannot read " + c.body.file);
          off += static_cast<std::uint64_t>(n);
          left -= static_cast<std::uint64_t>(n);
          send(chunk.data(), static_cast<std::size_t>(n), left > 0);
        }
      } catch (...) {
        ::close(fd);
        drop();  // half a body was sent: this connection is unusable
        throw;
      }
      ::close(fd);
    } else if (length > 0) {
      send(c.body.bytes.data(), c.body.bytes.size(), false);
    }

    bhttp::response_parser<bhttp::buffer_body> parser;
    parser.body_limit(boost::none);
    if (c.method == "HEAD") parser.skip(true);
    lowest().expires_after(o.timeout);
    bhttp::async_read_header(conn, buffer, parser, [&](error_code e, std::size_t) { ec = e; });
    run();
    if (ec) throw NetworkError{"read: " + ec.message()};
    Reply r;
    r.status = static_cast<int>(parser.get().result_int());
    for (const auto& f : parser.get())
      r.headers[codec::ascii_lower(f.name_string())] = std::string(f.value());
    const bool to_sink = c.sink != nullptr && r.status / 100 == 2;
    std::string chunk(kChunk, '\0');
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      lowest().expires_after(o.timeout);
      bhttp::async_read(conn, buffer, parser, [&](error_code e, std::size_t) { ec = e; });
      run();
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) throw NetworkError{"read body: " + ec.message()};
      const auto got = chunk.size() - parser.get().body().size;
      if (to_sink) {
        (*c.sink)(std::string_view(chunk.data(), got));
      } else {
        if (r.body.size() + got > (8u << 20))
          throw S3Error(r.status, "ResponseTooLarge", "an S3 response over 8 MiB");
        r.body.append(chunk.data(), got);
      }
    }
    if (!parser.get().keep_alive()) drop();
    return r;
  }

  Reply call(const Call& c) {
    std::string last;
    for (int attempt = 1;; ++attempt) {
      bool streamed = false;
      try {
        // A GET whose sink already received bytes cannot be replayed without duplicating them.
        std::function<void(std::string_view)> counting;
        Call copy = c;
        if (c.sink) {
          counting = [&](std::string_view b) {
            streamed = true;
            (*c.sink)(b);
          };
          copy.sink = &counting;
        }
        Reply r = once(copy);
        const bool retryable = r.status >= 500 || r.status == 429;
        if (retryable && attempt < o.max_attempts && !streamed) {
          last = "HTTP " + std::to_string(r.status);
          pause(attempt);
          continue;
        }
        if (r.status / 100 != 2 && c.throw_on_error) {
          auto code = xml::first(r.body, "Code");
          auto message = xml::first(r.body, "Message");
          if (code.empty()) code = r.status == 404 ? "NotFound" : "HTTP" + std::to_string(r.status);
          throw S3Error(r.status, code, message.empty() ? "no message" : message);
        }
        return r;
      } catch (const NetworkError& e) {
        drop();
        last = e.what;
        if (attempt >= o.max_attempts || streamed) throw S3Error(0, "NetworkError", e.what);
        pause(attempt);
      }
    }
  }

  void pause(int attempt) {
    const auto base = o.backoff.count() << std::min(attempt - 1, 6);
    std::uniform_int_distribution<std::int64_t> jitter(base / 2, base);
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter(rng)));
  }
};

namespace {

ObjectMeta meta_from(const std::string& key, const Client::Impl::Reply& r) {
  ObjectMeta m;
  m.key = key;
  auto get = [&](const char* h) {
    auto it = r.headers.find(h);
    return it == r.headers.end() ? std::string() : it->second;
  };
  m.etag = get("etag");
  m.content_type = get("content-type");
  m.last_modified = get("last-modified");
  const auto len = get("content-length");
  m.size = len.empty() ? 0 : std::stoull(len);
  return m;
}

}  // namespace

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

ObjectMeta Client::put_object(const std::string& bucket, const std::string& key, const Body& body,
                              const std::string& content_type) {
  auto r = impl_->call(
      {"PUT", bucket, key, "", {{"Content-Type", content_type}}, body, nullptr, {}, true});
  auto m = meta_from(key, r);
  m.size = body.length;
  m.content_type = content_type;
  return m;
}

ObjectMeta Client::get_object(const std::string& bucket, const std::string& key,
                              const std::function<void(std::string_view)>& sink,
                              std::optional<std::pair<std::uint64_t, std::uint64_t>> range) {
  std::vector<std::pair<std::string, std::string>> h;
  if (range)
    h.emplace_back("Range",
                   "bytes=" + std::to_string(range->first) + "-" + std::to_string(range->second));
  auto r = impl_->call({"GET", bucket, key, "", h, Body{}, &sink, {}, true});
  return meta_from(key, r);
}

std::string Client::get_object(const std::string& bucket, const std::string& key) {
  std::string out;
  get_object(bucket, key, [&](std::string_view b) { out.append(b); });
  return out;
}

std::optional<ObjectMeta> Client::head_object(const std::string& bucket, const std::string& key) {
  try {
    return meta_from(key, impl_->call({"HEAD", bucket, key, "", {}, Body{}, nullptr, {}, true}));
  } catch (const S3Error& e) {
    if (e.status() == 404) return std::nullopt;
    throw;
  }
}

void Client::delete_object(const std::string& bucket, const std::string& key) {
  impl_->call({"DELETE", bucket, key, "", {}, Body{}, nullptr, {}, true});
}

ListPage Client::list_objects(const std::string& bucket, const std::string& prefix,
                              const std::string& delimiter, const std::string& token,
                              int max_keys) {
  std::string q = "list-type=2&max-keys=" + std::to_string(max_keys);
  if (!prefix.empty()) q += "&prefix=" + uri_encode(prefix);
  if (!delimiter.empty()) q += "&delimiter=" + uri_encode(delimiter);
  if (!token.empty()) q += "&continuation-token=" + uri_encode(token);
  auto r = impl_->call({"GET", bucket, "", q, {}, Body{}, nullptr, {}, true});
  ListPage page;
  for (const auto& c : xml::elements(r.body, "Contents")) {
    ObjectMeta m;
    m.key = xml::first(c, "Key");
    m.etag = xml::first(c, "ETag");
    m.size = std::stoull(xml::first(c, "Size"));
    m.last_modified = xml::first(c, "LastModified");
    page.objects.push_back(std::move(m));
  }
  for (const auto& p : xml::elements(r.body, "CommonPrefixes"))
    page.common_prefixes.push_back(xml::first(p, "Prefix"));
  if (xml::first(r.body, "IsTruncated") == "true")
    page.next_token = xml::first(r.body, "NextContinuationToken");
  return page;
}

ObjectMeta Client::copy_object(const std::string& src_bucket, const std::string& src_key,
                               const std::string& dst_bucket, const std::string& dst_key) {
  auto r = impl_->call({"PUT",
                        dst_bucket,
                        dst_key,
                        "",
                        {{"x-amz-copy-source", uri_encode(src_bucket + "/" + src_key, true)}},
                        Body{},
                        nullptr,
                        {},
                        true});
  ObjectMeta m;
  m.key = dst_key;
  m.etag = xml::first(r.body, "ETag");
  m.last_modified = xml::first(r.body, "LastModified");
  return m;
}

std::string Client::create_multipart(const std::string& bucket, const std::string& key,
                                     const std::string& content_type) {
  auto r = impl_->call({"POST",
                        bucket,
                        key,
                        "uploads",
                        {{"Content-Type", content_type}},
                        Body{},
                        nullptr,
                        {},
                        true});
  auto id = xml::first(r.body, "UploadId");
  if (id.empty()) throw S3Error(r.status, "MalformedResponse", "no UploadId in the answer");
  return id;
}

std::string Client::upload_part(const std::string& bucket, const std::string& key,
                                const std::string& upload_id, int number, const Body& body) {
  auto r =
      impl_->call({"PUT",
                   bucket,
                   key,
                   "uploadId=" + uri_encode(upload_id) + "&partNumber=" + std::to_string(number),
                   {},
                   body,
                   nullptr,
                   {},
                   true});
  return meta_from(key, r).etag;
}

std::vector<Part> Client::list_parts(const std::string& bucket, const std::string& key,
                                     const std::string& upload_id) {
  std::vector<Part> out;
  int marker = 0;
  for (;;) {
    std::string q = "uploadId=" + uri_encode(upload_id);
    if (marker > 0) q += "&part-number-marker=" + std::to_string(marker);
    auto r = impl_->call({"GET", bucket, key, q, {}, Body{}, nullptr, {}, true});
    for (const auto& p : xml::elements(r.body, "Part")) {
      out.push_back(Part{std::stoi(xml::first(p, "PartNumber")), xml::first(p, "ETag"),
                         std::stoull(xml::first(p, "Size"))});
    }
    if (xml::first(r.body, "IsTruncated") != "true") return out;
    const auto next = xml::first(r.body, "NextPartNumberMarker");
    if (next.empty() || std::stoi(next) <= marker) return out;
    marker = std::stoi(next);
  }
}

ObjectMeta Client::complete_multipart(const std::string& bucket, const std::string& key,
                                      const std::string& upload_id,
                                      const std::vector<Part>& parts) {
  std::string body = "<CompleteMultipartUpload>";
  for (const auto& p : parts) {
    body += "<Part><PartNumber>" + std::to_string(p.number) + "</PartNumber><ETag>" +
            xml::escape(p.etag) + "</ETag></Part>";
  }
  body += "</CompleteMultipartUpload>";
  auto r = impl_->call({"POST",
                        bucket,
                        key,
                        "uploadId=" + uri_encode(upload_id),
                        // Create only: the upload's key is its own (S3 conditional writes).
                        {{"Content-Type", "application/xml"}, {"If-None-Match", "*"}},
                        Body::of(body),
                        nullptr,
                        {},
                        true});
  // S3 may answer 200 with an <Error> document when the assembly failed late.
  if (r.body.find("<Error>") != std::string::npos) {
    throw S3Error(500, xml::first(r.body, "Code"), xml::first(r.body, "Message"));
  }
  ObjectMeta m;
  m.key = key;
  m.etag = xml::first(r.body, "ETag");
  return m;
}

void Client::abort_multipart(const std::string& bucket, const std::string& key,
                             const std::string& upload_id) {
  impl_->call(
      {"DELETE", bucket, key, "uploadId=" + uri_encode(upload_id), {}, Body{}, nullptr, {}, true});
}

std::vector<Upload> Client::list_multipart_uploads(const std::string& bucket,
                                                   const std::string& prefix) {
  std::string q = "uploads";
  if (!prefix.empty()) q += "&prefix=" + uri_encode(prefix);
  auto r = impl_->call({"GET", bucket, "", q, {}, Body{}, nullptr, {}, true});
  std::vector<Upload> out;
  for (const auto& u : xml::elements(r.body, "Upload"))
    out.push_back(Upload{xml::first(u, "Key"), xml::first(u, "UploadId")});
  return out;
}

std::string Client::presign(const std::string& method, const std::string& bucket,
                            const std::string& key, std::int64_t expires_s,
                            const std::string& query,
                            const std::vector<std::pair<std::string, std::string>>& headers) const {
  Impl::Call c{method, bucket, key, query, {}, Body{}, nullptr, {}, true};
  std::string host_header;
  const auto path = impl_->target(c, host_header);
  const auto date = amz_date(std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
  Request r{method, path, query, {{"Host", host_header}}, {}};
  for (const auto& h : headers) r.headers.push_back(h);
  const Scope scope{date.substr(0, 8), impl_->o.region, "s3"};
  const auto q =
      presign_query(impl_->o.credentials, scope, date, expires_s, r, Options{false, false});
  return (impl_->tls ? "https://" : "http://") + host_header + path + "?" + q;
}

std::string Client::Reply::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (k == codec::ascii_lower(name)) return v;
  return {};
}

Client::Reply Client::send_unsigned(const std::string& method, const std::string& target,
                                    const std::vector<std::pair<std::string, std::string>>& headers,
                                    const Body& body,
                                    const std::function<void(std::string_view)>* sink) {
  if (!target.starts_with("/")) throw std::invalid_argument("target must start with '/'");
  Impl::Call c{method, {}, {}, {}, headers, body, sink, target, false};
  auto r = impl_->call(c);
  Reply out;
  out.status = r.status;
  out.headers.assign(r.headers.begin(), r.headers.end());
  out.body = std::move(r.body);
  return out;
}

}  // namespace kiln::s3
