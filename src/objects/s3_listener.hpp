// The object store on the HTTP server: S3Api (the protocol, sans-io) as a StreamHandler
// (platform/http_stream.hpp), so that bodies stream both ways in flat memory whatever the
// object's size. Error documents name the request (RequestId, x-amz-request-id); CORS as
// the bucket's configuration says. No Beast here.
#pragma once

#include "objects/s3_api.hpp"
#include "platform/http_stream.hpp"

namespace kiln::objects {

class S3Listener final : public http::StreamHandler {
 public:
  explicit S3Listener(S3Api& api) : api_(api) {}

  [[nodiscard]] std::string metrics_prefix() const override { return "kiln_objects"; }
  std::variant<http::StreamAnswer, std::unique_ptr<http::BodySink>> begin(
      const http::Request& head) override;
  http::StreamAnswer refused(int status, const std::string& reason) override;
  void finish(const http::Request& head, http::StreamAnswer& answer) override;

  // An S3 answer as the server sends it (a file range becomes a source read with pread).
  [[nodiscard]] http::StreamAnswer answer_of(S3Response r) const;

 private:
  S3Api& api_;
};

}  // namespace kiln::objects
