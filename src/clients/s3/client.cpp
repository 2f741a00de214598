// The S3 operations over the platform's HTTP client: SigV4 signing, addressing, S3 error
// documents. No Beast here (STYLE rule 12): the transport is platform/http_client.cpp.

#include "clients/s3/client.hpp"
#include "platform/codec.hpp"

#include "clients/s3/xml.hpp"

#include <map>

namespace kiln::s3 {

namespace {

http::ClientOptions transport_options(const ClientOptions& o) {
  http::ClientOptions t;
  t.endpoint = o.endpoint;
  t.ca_file = o.ca_file;
  t.verify_tls = o.verify_tls;
  t.timeout = o.timeout;
  t.max_attempts = o.max_attempts;
  t.backoff = o.backoff;
  t.user_agent = "kiln-s3";
  return t;
}

}  // namespace

struct Client::Impl {
  explicit Impl(ClientOptions opts) : o(std::move(opts)), http(transport_options(o)) {}

  ClientOptions o;
  http::Client http;

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
  };

  std::string target(const Call& c, std::string& host_header) const {
    std::string path;
    if (o.path_style || c.bucket.empty()) {
      host_header = http.authority();
      path = "/" + c.bucket;
      if (!c.key.empty()) path += "/" + uri_encode(c.key, true);
    } else {
      host_header = c.bucket + "." + http.authority();
      path = "/" + uri_encode(c.key, true);
    }
    return path;
  }

  // Signs the call (SigV4, header form) and sends it; a non-2xx answer after the transport's
  // retries throws S3Error with S3's code and message, a network failure S3Error status 0.
  Reply call(const Call& c) {
    std::string host_header;
    const auto path = target(c, host_header);
    const auto date = amz_date(std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
    const std::string payload =
        c.body.from_file() ? std::string(kUnsignedPayload) : codec::sha256_hex(c.body.bytes);
    Request sr{c.method,
               path,
               c.query,
               {{"Host", host_header}, {"x-amz-date", date}, {"x-amz-content-sha256", payload}},
               payload};
    if (!o.credentials.session_token.empty())
      sr.headers.emplace_back("x-amz-security-token", o.credentials.session_token);
    for (const auto& h : c.headers) sr.headers.push_back(h);
    const Scope scope{date.substr(0, 8), o.region, "s3"};
    http::ClientRequest req;
    req.method = c.method;
    req.target = path + (c.query.empty() ? "" : "?" + c.query);
    req.headers = sr.headers;
    req.headers.emplace_back("Authorization",
                             authorization(o.credentials, scope, date, sr, Options{false, false}));
    req.body = c.body;
    req.sink = c.sink;
    http::ClientResponse r;
    try {
      r = http.send(req);
    } catch (const http::NetworkError& e) {
      throw S3Error(0, "NetworkError", e.what());
    }
    if (r.status / 100 != 2) {
      auto code = xml::first(r.body, "Code");
      auto message = xml::first(r.body, "Message");
      if (code.empty()) code = r.status == 404 ? "NotFound" : "HTTP" + std::to_string(r.status);
      throw S3Error(r.status, code, message.empty() ? "no message" : message);
    }
    Reply out;
    out.status = r.status;
    out.headers.insert(r.headers.begin(), r.headers.end());
    out.body = std::move(r.body);
    return out;
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
  auto r = impl_->call({"PUT", bucket, key, "", {{"Content-Type", content_type}}, body, nullptr});
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
  auto r = impl_->call({"GET", bucket, key, "", h, Body{}, &sink});
  return meta_from(key, r);
}

std::string Client::get_object(const std::string& bucket, const std::string& key) {
  std::string out;
  get_object(bucket, key, [&](std::string_view b) { out.append(b); });
  return out;
}

std::optional<ObjectMeta> Client::head_object(const std::string& bucket, const std::string& key) {
  try {
    return meta_from(key, impl_->call({"HEAD", bucket, key, "", {}, Body{}, nullptr}));
  } catch (const S3Error& e) {
    if (e.status() == 404) return std::nullopt;
    throw;
  }
}

void Client::delete_object(const std::string& bucket, const std::string& key) {
  impl_->call({"DELETE", bucket, key, "", {}, Body{}, nullptr});
}

ListPage Client::list_objects(const std::string& bucket, const std::string& prefix,
                              const std::string& delimiter, const std::string& token,
                              int max_keys) {
  std::string q = "list-type=2&max-keys=" + std::to_string(max_keys);
  if (!prefix.empty()) q += "&prefix=" + uri_encode(prefix);
  if (!delimiter.empty()) q += "&delimiter=" + uri_encode(delimiter);
  if (!token.empty()) q += "&continuation-token=" + uri_encode(token);
  auto r = impl_->call({"GET", bucket, "", q, {}, Body{}, nullptr});
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
                        nullptr});
  ObjectMeta m;
  m.key = dst_key;
  m.etag = xml::first(r.body, "ETag");
  m.last_modified = xml::first(r.body, "LastModified");
  return m;
}

std::string Client::create_multipart(const std::string& bucket, const std::string& key,
                                     const std::string& content_type) {
  auto r = impl_->call(
      {"POST", bucket, key, "uploads", {{"Content-Type", content_type}}, Body{}, nullptr});
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
                   nullptr});
  return meta_from(key, r).etag;
}

std::vector<Part> Client::list_parts(const std::string& bucket, const std::string& key,
                                     const std::string& upload_id) {
  std::vector<Part> out;
  int marker = 0;
  for (;;) {
    std::string q = "uploadId=" + uri_encode(upload_id);
    if (marker > 0) q += "&part-number-marker=" + std::to_string(marker);
    auto r = impl_->call({"GET", bucket, key, q, {}, Body{}, nullptr});
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
                        nullptr});
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
  impl_->call({"DELETE", bucket, key, "uploadId=" + uri_encode(upload_id), {}, Body{}, nullptr});
}

std::vector<Upload> Client::list_multipart_uploads(const std::string& bucket,
                                                   const std::string& prefix) {
  std::string q = "uploads";
  if (!prefix.empty()) q += "&prefix=" + uri_encode(prefix);
  auto r = impl_->call({"GET", bucket, "", q, {}, Body{}, nullptr});
  std::vector<Upload> out;
  for (const auto& u : xml::elements(r.body, "Upload"))
    out.push_back(Upload{xml::first(u, "Key"), xml::first(u, "UploadId")});
  return out;
}

std::string Client::presign(const std::string& method, const std::string& bucket,
                            const std::string& key, std::int64_t expires_s,
                            const std::string& query,
                            const std::vector<std::pair<std::string, std::string>>& headers) const {
  Impl::Call c{method, bucket, key, query, {}, Body{}, nullptr};
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
  return (impl_->http.tls() ? "https://" : "http://") + host_header + path + "?" + q;
}

}  // namespace kiln::s3
