#include "objects/s3_listener.hpp"

#include "platform/clock.hpp"
#include "platform/log.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace kiln::objects {
namespace {

S3Request request_of(const http::Request& head) {
  S3Request sr;
  sr.method = head.method;
  sr.path = head.path;
  sr.query = head.query;
  sr.headers = head.headers;
  sr.now_unix = clock::unix_ms() / 1000;
  return sr;
}

// A byte range of an object's file, read with pread from the descriptor the lookup opened
// (the object it named, whatever happened to its name since).
class FileRange final : public http::BodySource {
 public:
  FileRange(int fd, std::uint64_t offset) : fd_(fd), offset_(offset) {}
  ~FileRange() override { ::close(fd_); }
  FileRange(const FileRange&) = delete;
  FileRange& operator=(const FileRange&) = delete;
  std::size_t read(char* out, std::size_t max) override {
    const ssize_t n = ::pread(fd_, out, max, static_cast<off_t>(offset_));
    if (n <= 0) return 0;
    offset_ += static_cast<std::uint64_t>(n);
    return static_cast<std::size_t>(n);
  }

 private:
  int fd_;
  std::uint64_t offset_;
};

// S3Api's sink on the server's: an S3 error (or a failure) while the body arrives ends the
// request with its document.
class Sink final : public http::BodySink {
 public:
  Sink(const S3Listener& listener, S3Api& api, std::unique_ptr<objects::BodySink> inner,
       std::string path, std::string request_id)
      : listener_(listener),
        api_(api),
        inner_(std::move(inner)),
        path_(std::move(path)),
        request_id_(std::move(request_id)) {}

  bool write(std::string_view piece) override {
    return guarded([&] { inner_->write(piece); });
  }
  http::StreamAnswer finish() override {
    if (failed_) return std::move(*failed_);
    S3Response r;
    if (!guarded([&] { r = inner_->finish(); })) return std::move(*failed_);
    return listener_.answer_of(std::move(r));
  }

 private:
  template <class F>
  bool guarded(F&& f) {
    try {
      f();
      return true;
    } catch (const Error& e) {
      failed_ = listener_.answer_of(api_.error(e.status(), e.code(), e.what(), path_));
    } catch (const std::exception& e) {
      log::error("object store request failed", {{"request_id", request_id_}, {"error", e.what()}});
      failed_ = listener_.answer_of(api_.error(
          500, "InternalError", "We encountered an internal error. Please try again.", path_));
      failed_->close = true;
    }
    return false;
  }

  const S3Listener& listener_;
  S3Api& api_;
  std::unique_ptr<objects::BodySink> inner_;
  std::string path_;
  std::string request_id_;
  std::optional<http::StreamAnswer> failed_;
};

}  // namespace

http::StreamAnswer S3Listener::answer_of(S3Response r) const {
  http::StreamAnswer a;
  a.status = r.status;
  a.headers = std::move(r.headers);
  a.body = std::move(r.body);
  a.head_only = r.head_only;
  if (!r.file.empty()) {
    a.length = r.length;
    if (!r.head_only) {
      const int fd = r.data ? ::dup(r.data->fd()) : ::open(r.file.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        // Deleted between the lookup and now.
        return answer_of(api_.error(404, "NoSuchKey", "The specified key does not exist.", ""));
      }
      a.source = std::make_unique<FileRange>(fd, r.offset);
    }
  }
  return a;
}

std::variant<http::StreamAnswer, std::unique_ptr<http::BodySink>> S3Listener::begin(
    const http::Request& head) {
  try {
    auto begun = api_.begin(request_of(head));
    if (auto* sink = std::get_if<std::unique_ptr<BodySink>>(&begun))
      return std::make_unique<Sink>(*this, api_, std::move(*sink), head.path, head.request_id);
    return answer_of(std::get<S3Response>(std::move(begun)));
  } catch (const std::exception& e) {
    log::error("object store request failed",
               {{"request_id", head.request_id}, {"error", e.what()}});
    auto a = answer_of(api_.error(
        500, "InternalError", "We encountered an internal error. Please try again.", head.path));
    a.close = true;
    return a;
  }
}

http::StreamAnswer S3Listener::refused(int status, const std::string& reason) {
  if (reason == "header_too_large")
    return answer_of(api_.error(400, "RequestHeaderSectionTooLarge",
                                "Your request header section exceeds the maximum allowed size.",
                                ""));
  if (reason == "malformed")
    return answer_of(api_.error(400, "BadRequest", "The request could not be parsed.", ""));
  return answer_of(api_.error(status, status == 501 ? "NotImplemented" : "BadRequest",
                              "The request's framing is refused: " + reason + ".", ""));
}

void S3Listener::finish(const http::Request& head, http::StreamAnswer& a) {
  // An error document names the request, as the x-amz-request-id header does (S3).
  if (a.status >= 300 && a.body.ends_with("</Error>"))
    a.body.insert(a.body.size() - 8, "<RequestId>" + head.request_id + "</RequestId>");
  a.headers.emplace_back("x-amz-request-id", head.request_id);
  if (head.method.empty()) return;  // refused before it was read: no CORS
  S3Response cors;
  api_.add_cors(request_of(head), cors);
  for (auto& h : cors.headers) a.headers.push_back(std::move(h));
}

}  // namespace kiln::objects
