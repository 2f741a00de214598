// A blocking HTTP/1.1 client (RFC 9110, RFC 9112) over Beast: one connection kept alive per
// client, plain or TLS (the system's CAs or a given file; SNI; the certificate must name the
// host), a timeout on every network step, and retries with exponential backoff and jitter on
// dropped connections, 5xx and 429. Bodies stream from a file range in 64 KiB pieces and into
// a callback: memory stays flat whatever the size.
//
// The transport under the S3 client (clients/s3) and Kiln's own API client (client/). Blocking
// by design: call it from worker threads, never from an event loop. One Client per thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::http {

struct ClientOptions {
  std::string endpoint;    // http://host[:port] or https://host[:port]; a trailing '/' is dropped
  std::string ca_file;     // https: PEM CAs to trust; empty: the system's (SSL_CERT_FILE honoured)
  bool verify_tls = true;  // https: check the certificate and that it names the host
  std::chrono::milliseconds timeout{30'000};  // per connect, write and read step
  int max_attempts = 4;                       // 1: no retry
  std::chrono::milliseconds backoff{100};     // doubled per attempt (capped at 64x), jittered
  std::string user_agent = "kiln";
  std::size_t max_body = 8u << 20;  // bytes of a response kept in memory (not streamed)
};

// A request body: bytes in memory (borrowed: they must outlive the call), or a range of a
// file read as it is sent.
struct Body {
  std::string_view bytes;
  std::string file;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  static Body of(std::string_view b) { return Body{b, {}, 0, b.size()}; }
  static Body file_range(std::string path, std::uint64_t offset, std::uint64_t length) {
    return Body{{}, std::move(path), offset, length};
  }
  [[nodiscard]] bool from_file() const { return !file.empty(); }
  [[nodiscard]] std::uint64_t size() const { return from_file() ? length : bytes.size(); }
};

using Headers = std::vector<std::pair<std::string, std::string>>;

struct ClientRequest {
  ClientRequest() = default;
  ClientRequest(std::string m, std::string t, Headers h = {}, Body b = {})
      : method(std::move(m)), target(std::move(t)), headers(std::move(h)), body(std::move(b)) {}

  std::string method;  // "GET", "PUT", ...
  std::string target;  // origin-form: path and query, as sent ("/a%20b?x=1"); starts with '/'
  Headers headers;     // sent in this order; Host defaults to the endpoint's authority
  Body body;
  // A 2xx body goes here in pieces (any size) instead of into ClientResponse::body. A call
  // whose sink received bytes is not retried (the bytes cannot be taken back).
  const std::function<void(std::string_view)>* sink = nullptr;
  bool retry = true;  // false: one attempt whatever happens (a request that must not repeat)
};

struct ClientResponse {
  int status = 0;
  Headers headers;   // names in lowercase
  std::string body;  // unless streamed to the request's sink
  // The first value of `name` (any case), empty when absent.
  [[nodiscard]] std::string header(std::string_view name) const;
};

// No answer from the peer after the last attempt (resolve, connect, TLS, write or read), or a
// body that cannot be sent (an unreadable file) or kept (over max_body). what() says which.
class NetworkError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Client {
 public:
  // Throws std::invalid_argument for an endpoint that is not http(s)://host[:port], and
  // boost::system::system_error for an unreadable ca_file.
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends the request, retrying as described above; any status is returned as a value (a
  // 5xx or 429 after the last attempt too). Throws NetworkError.
  ClientResponse send(const ClientRequest& request);

  // "host:port" as written in the endpoint (the Host header's value), and whether it is TLS.
  [[nodiscard]] const std::string& authority() const;
  [[nodiscard]] bool tls() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::http
