// A client of Kiln's REST API (`kiln upload`, `kiln download`; the build agent later): over
// plain HTTP (JSON in and out, problem+json errors as Failures, 429/503 waited out as told),
// URL splitting, file hashing and streaming a presigned URL to a sink.
#pragma once

#include "platform/http_client.hpp"

#include <boost/json.hpp>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace kiln::client {

// A command's failure, told to the user as it is.
struct Failure {
  std::string message;
};
[[noreturn]] void fail(std::string m);

// "http(s)://host:port/path?query" -> ("http(s)://host:port", "/path?query"). For https the
// system's CAs are trusted (SSL_CERT_FILE / SSL_CERT_DIR to point elsewhere).
std::pair<std::string, std::string> split_url(const std::string& url);

// The file's SHA-256, lowercase hex; `progress(bytes hashed)` now and then when given.
std::string sha256_file(const std::string& path,
                        const std::function<void(std::uint64_t)>& progress = {});

// GETs a URL that needs no signing of ours (a presigned download), streaming a 2xx body to
// `sink`; fails with the status otherwise.
void fetch(const std::string& url, const std::function<void(std::string_view)>& sink);

class ApiClient {
 public:
  ApiClient(const std::string& base, std::string token);
  // Returns (status, body); 4xx/5xx other than `allowed` fail with the problem's detail.
  std::pair<int, boost::json::value> call(const std::string& method, const std::string& path,
                                          const boost::json::value* body = nullptr,
                                          std::initializer_list<int> allowed = {});

 private:
  std::string prefix_, token_;
  std::unique_ptr<http::Client> client_;
};

}  // namespace kiln::client
