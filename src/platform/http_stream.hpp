// Streamed requests and answers on the HTTP server (http_server.hpp): a listener whose
// every request goes to one StreamHandler, with bodies of any size in flat memory (64 KiB
// pieces both ways). The object store's S3 listener runs on it. Plain interface: no Beast.
#pragma once

#include "platform/http.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace kiln::http {

// An answer's body read piece by piece after the headers (a file range).
class BodySource {
 public:
  virtual ~BodySource() = default;
  // Up to `max` bytes into `out`, in order; 0 when it cannot give the rest it promised (the
  // connection is then cut: the length was sent).
  virtual std::size_t read(char* out, std::size_t max) = 0;
};

struct StreamAnswer {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;  // sent as given
  std::string body;                                          // when there is no source
  std::unique_ptr<BodySource> source;  // streamed after the headers: `length` bytes
  std::uint64_t length = 0;
  bool head_only = false;  // HEAD: the headers (with Content-Length) and no body
  bool close = false;      // close the connection after this answer
};

// A request's body as it arrives.
class BodySink {
 public:
  virtual ~BodySink() = default;
  // The next piece. False: the rest is refused (finish() says why; what the client still
  // sends is read and dropped for a bounded time, then the connection closes).
  virtual bool write(std::string_view piece) = 0;
  // After the last piece, or after a refusal: the answer.
  virtual StreamAnswer finish() = 0;
};

class StreamHandler {
 public:
  virtual ~StreamHandler() = default;
  // The listener's metrics: `<prefix>_requests_total{method,status}`,
  // `<prefix>_bytes_received_total`, `<prefix>_bytes_sent_total`, `<prefix>_open_connections`.
  [[nodiscard]] virtual std::string metrics_prefix() const = 0;
  // The header section (Request::body empty): an answer at once, or a sink for the body.
  // Runs on the connection's strand; it must not throw.
  virtual std::variant<StreamAnswer, std::unique_ptr<BodySink>> begin(const Request& head) = 0;
  // The answer to a request refused before begin(): `status` 400 (malformed, or a header
  // section over the limit: `reason` header_too_large) or 501 (a transfer coding the server
  // does not do), `reason` saying which.
  virtual StreamAnswer refused(int status, const std::string& reason) = 0;
  // The last touch on an answer to `head` before it leaves (its request id is
  // `head.request_id`).
  virtual void finish(const Request& head, StreamAnswer& answer) {
    (void)head;
    (void)answer;
  }
};

}  // namespace kiln::http
