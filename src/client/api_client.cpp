#include "client/api_client.hpp"

#include "platform/codec.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

namespace kiln::client {

namespace json = boost::json;

[[noreturn]] void fail(std::string m) {
  throw Failure{std::move(m)};
}

std::pair<std::string, std::string> split_url(const std::string& url) {
  const std::size_t scheme = url.starts_with("https://") ? 8 : url.starts_with("http://") ? 7 : 0;
  if (scheme == 0) fail("only http:// and https:// URLs are supported (got " + url + ")");
  const auto slash = url.find('/', scheme);
  if (slash == std::string::npos) return {url, "/"};
  return {url.substr(0, slash), url.substr(slash)};
}

std::string sha256_file(const std::string& path,
                        const std::function<void(std::uint64_t)>& progress) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open " + path);
  codec::Sha256 sha;
  std::string buf(1 << 20, '\0');
  std::uint64_t done = 0;
  auto last = std::chrono::steady_clock::now();
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      fail("cannot read " + path);
    }
    if (n == 0) break;
    sha.update(buf.data(), static_cast<std::size_t>(n));
    done += static_cast<std::uint64_t>(n);
    if (progress && std::chrono::steady_clock::now() - last > std::chrono::milliseconds(200)) {
      last = std::chrono::steady_clock::now();
      progress(done);
    }
  }
  ::close(fd);
  return sha.finish_hex();
}

ApiClient::ApiClient(const std::string& base, std::string token) : token_(std::move(token)) {
  auto [endpoint, prefix] = split_url(base);
  prefix_ = prefix == "/" ? "" : prefix;
  while (prefix_.ends_with('/')) prefix_.pop_back();
  http::ClientOptions o;
  o.endpoint = endpoint;
  o.timeout = std::chrono::minutes(5);  // completing a large upload verifies its hash
  o.user_agent = "kiln-cli";
  client_ = std::make_unique<http::Client>(o);
}

std::pair<int, json::value> ApiClient::call(const std::string& method, const std::string& path,
                                            const json::value* body,
                                            std::initializer_list<int> allowed) {
  http::ClientRequest req{
      method, prefix_ + path,
      http::Headers{{"Authorization", "Bearer " + token_}, {"Accept", "application/json"}}};
  std::string data;
  if (body) {
    data = json::serialize(*body);
    req.headers.emplace_back("Content-Type", "application/json");
    req.body = http::Body::of(data);
  }
  http::ClientResponse r;
  for (int attempt = 1;; ++attempt) {
    try {
      r = client_->send(req);
    } catch (const http::NetworkError& e) {
      fail("cannot reach the Kiln API: " + std::string(e.what()));
    }
    // Rate-limited or busy: wait as told (Retry-After, at most 30 s), a few times.
    if ((r.status != 429 && r.status != 503) || attempt >= 6) break;
    const auto after = std::atoi(r.header("retry-after").c_str());
    std::this_thread::sleep_for(std::chrono::seconds(std::clamp(after, 1, 30)));
  }
  json::value doc;
  if (!r.body.empty()) {
    boost::system::error_code ec;
    doc = json::parse(r.body, ec);
    if (ec) doc = nullptr;
  }
  if (r.status / 100 == 2 || std::find(allowed.begin(), allowed.end(), r.status) != allowed.end())
    return {r.status, doc};
  std::string detail = "HTTP " + std::to_string(r.status);
  if (doc.is_object() && doc.as_object().contains("detail"))
    detail += ": " + std::string(doc.at("detail").as_string());
  fail(method + " " + path + ": " + detail);
}

void fetch(const std::string& url, const std::function<void(std::string_view)>& sink) {
  auto [endpoint, target] = split_url(url);
  http::ClientOptions o;
  o.endpoint = endpoint;
  o.timeout = std::chrono::minutes(5);
  o.user_agent = "kiln-download";
  http::Client client(o);
  http::ClientRequest req{"GET", target};
  req.sink = &sink;
  http::ClientResponse r;
  try {
    r = client.send(req);
  } catch (const http::NetworkError& e) {
    fail("cannot download: " + std::string(e.what()));
  }
  if (r.status / 100 != 2) fail("the store answered HTTP " + std::to_string(r.status));
}

}  // namespace kiln::client
