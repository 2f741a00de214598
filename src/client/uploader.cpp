#include "client/uploader.hpp"

#include "clients/s3/sigv4.hpp"
#include "platform/codec.hpp"
#include "platform/http_client.hpp"

#include <boost/json.hpp>

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

namespace kiln::client {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

// What is kept between runs to resume.
struct State {
  std::string path, project, api, sha256, upload;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
};

std::optional<State> load_state(const fs::path& f) {
  std::ifstream in(f);
  if (!in) return std::nullopt;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  try {
    const auto& o = v.as_object();
    State s;
    s.path = json::value_to<std::string>(o.at("path"));
    s.project = json::value_to<std::string>(o.at("project"));
    s.api = json::value_to<std::string>(o.at("api"));
    s.sha256 = json::value_to<std::string>(o.at("sha256"));
    s.upload = json::value_to<std::string>(o.at("upload"));
    s.size = json::value_to<std::uint64_t>(o.at("size"));
    s.mtime_ns = json::value_to<std::int64_t>(o.at("mtime_ns"));
    return s;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void save_state(const fs::path& f, const State& s) {
  fs::create_directories(f.parent_path());
  const auto tmp = f.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << json::serialize(json::object{{"path", s.path},
                                        {"project", s.project},
                                        {"api", s.api},
                                        {"sha256", s.sha256},
                                        {"upload", s.upload},
                                        {"size", s.size},
                                        {"mtime_ns", s.mtime_ns}});
    if (!out) fail("cannot write " + tmp);
  }
  fs::rename(tmp, f);
}

// One PUT of a file range to a presigned URL's target (path and query).
http::ClientResponse put(http::Client& store, const std::string& target, http::Headers headers,
                         const std::string& file, std::uint64_t offset, std::uint64_t length) {
  http::ClientRequest r{"PUT", target, std::move(headers),
                        http::Body::file_range(file, offset, length)};
  try {
    return store.send(r);
  } catch (const http::NetworkError& e) {
    fail("cannot reach the object store: " + std::string(e.what()));
  }
}

std::unique_ptr<http::Client> store_client(const std::string& endpoint) {
  http::ClientOptions o;
  o.endpoint = endpoint;
  o.user_agent = "kiln-upload";
  return std::make_unique<http::Client>(o);
}

// Sends the parts `todo` of multipart upload `id`, `parallel` at a time; their URLs asked
// of the API a few at a time (they are short-lived).
void send_parts(const UploadJob& job, UploadListener& listener, const std::string& base,
                const std::string& id, const std::string& file, std::uint64_t part_size,
                const std::vector<std::uint64_t>& todo, UploadOutcome& out) {
  std::mutex mu;
  std::size_t next = 0;
  std::string error;
  std::atomic<std::uint64_t> parts_sent{0}, bytes_sent{0};
  auto worker = [&] {
    try {
      ApiClient api(job.api, job.token);
      std::unique_ptr<http::Client> store;
      std::string store_endpoint;
      for (;;) {
        std::vector<std::uint64_t> batch;
        {
          std::lock_guard lock(mu);
          if (!error.empty() || listener.stopping()) return;
          while (next < todo.size() && batch.size() < 4) batch.push_back(todo[next++]);
        }
        if (batch.empty()) return;
        json::array nums;
        for (auto n : batch) nums.push_back(n);
        json::value req = json::object{{"parts", nums}};
        auto [status, doc] = api.call("POST", base + "/" + id + "/parts", &req);
        for (const auto& p : doc.at("parts").as_array()) {
          if (listener.stopping()) return;
          const auto n = p.at("number").to_number<std::uint64_t>();
          const auto len = p.at("size").to_number<std::uint64_t>();
          auto [endpoint, target] = split_url(std::string(p.at("url").as_string()));
          if (!store || endpoint != store_endpoint) store = store_client(store_endpoint = endpoint);
          listener.part_started(n);
          auto r = put(*store, target, {}, file, (n - 1) * part_size, len);
          if (r.status == 403) {
            // The URL may have expired while this run stalled: sign this part afresh, once.
            json::value one = json::object{{"parts", json::array{n}}};
            auto [st, fresh] = api.call("POST", base + "/" + id + "/parts", &one);
            target = split_url(std::string(fresh.at("parts").at(0).at("url").as_string())).second;
            r = put(*store, target, {}, file, (n - 1) * part_size, len);
          }
          if (r.status != 200)
            fail("the object store refused part " + std::to_string(n) + ": HTTP " +
                 std::to_string(r.status) + " " + r.body.substr(0, 300));
          ++parts_sent;
          bytes_sent += len;
          listener.sent(len);
          listener.part_sent(n, len, r.header("etag"));
        }
      }
    } catch (const Failure& f) {
      std::lock_guard lock(mu);
      if (error.empty()) error = f.message;
    } catch (const std::exception& e) {
      std::lock_guard lock(mu);
      if (error.empty()) error = e.what();
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < std::max(1, job.parallel); ++i) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  out.parts_sent = parts_sent.load();
  out.bytes_sent = bytes_sent.load();
  if (!error.empty()) fail(error);
}

}  // namespace

std::string guess_type(const fs::path& p) {
  static const std::map<std::string, std::string> kTypes = {
      {".glb", "model/gltf-binary"},
      {".gltf", "model/gltf+json"},
      {".obj", "model/obj"},
      {".stl", "model/stl"},
      {".fbx", "application/octet-stream"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".webp", "image/webp"},
      {".ktx2", "image/ktx2"},
      {".exr", "image/x-exr"},
      {".hdr", "image/vnd.radiance"},
      {".wav", "audio/wav"},
      {".mp3", "audio/mpeg"},
      {".ogg", "audio/ogg"},
      {".mp4", "video/mp4"},
      {".json", "application/json"},
      {".txt", "text/plain"},
      {".zip", "application/zip"},
      {".bin", "application/gltf-buffer"},
  };
  auto ext = p.extension().string();
  for (auto& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto it = kTypes.find(ext);
  return it == kTypes.end() ? "application/octet-stream" : it->second;
}

fs::path default_state_dir() {
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) return fs::path(x) / "kiln/uploads";
  if (const char* h = std::getenv("HOME"); h && *h)
    return fs::path(h) / ".local/state/kiln/uploads";
  return fs::temp_directory_path() / "kiln-uploads";
}

UploadOutcome upload_file(const UploadJob& job, UploadListener& listener) {
  struct stat st {};
  if (::stat(job.file.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    fail(job.file + " is not a readable regular file");
  const auto abs = fs::absolute(job.file).lexically_normal().string();
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const std::int64_t mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
  const auto state_file =
      job.state_dir /
      (codec::sha256_hex(abs + "\n" + job.project + "\n" + job.api).substr(0, 32) + ".json");
  const std::string base = "/v1/projects/" + s3::uri_encode(job.project) + "/uploads";

  ApiClient api(job.api, job.token);
  auto saved = load_state(state_file);
  if (saved && (saved->size != size || saved->mtime_ns != mtime_ns || saved->path != abs)) {
    saved.reset();  // the file changed: start over
  }
  State s;
  s.path = abs;
  s.project = job.project;
  s.api = job.api;
  s.size = size;
  s.mtime_ns = mtime_ns;
  s.sha256 = saved ? saved->sha256
                   : sha256_file(abs, [&](std::uint64_t done) { listener.hashing(done, size); });

  UploadOutcome out;
  json::object upload;
  if (saved && !saved->upload.empty()) {
    auto [status, doc] = api.call("GET", base + "/" + saved->upload, nullptr, {404});
    if (status == 200 && doc.at("state") == "completed") {
      fs::remove(state_file);
      out.asset = doc.at("asset");
      out.upload = saved->upload;
      out.resumed = true;
      out.completed_before = true;
      return out;
    }
    if (status == 200 && doc.at("state") == "open") {
      upload = doc.as_object();
      out.resumed = true;
    }
  }
  json::object put_spec;
  if (upload.empty()) {
    json::value req = json::object{
        {"filename", job.name.empty() ? fs::path(abs).filename().string() : job.name},
        {"size", size},
        {"content_type", job.content_type.empty() ? guess_type(abs) : job.content_type},
        {"sha256", s.sha256}};
    auto [status, doc] = api.call("POST", base, &req);
    if (doc.at("deduplicated").as_bool()) {
      fs::remove(state_file);
      listener.note("the project already has this file (asset " +
                    std::string(doc.at("asset").at("id").as_string()) + "); nothing sent");
      out.how = UploadOutcome::How::Deduplicated;
      out.asset = doc.at("asset");
      return out;
    }
    upload = doc.at("upload").as_object();
    if (auto* p = doc.as_object().if_contains("put")) put_spec = p->as_object();
  } else if (auto* p = upload.if_contains("put")) {
    put_spec = p->as_object();
  }
  const std::string id(upload.at("id").as_string());
  out.upload = id;
  s.upload = id;
  save_state(state_file, s);

  if (!upload.at("multipart").as_bool()) {
    auto [endpoint, target] = split_url(std::string(put_spec.at("url").as_string()));
    auto store = store_client(endpoint);
    http::Headers h;
    for (const auto& kv : put_spec.at("headers").as_object())
      h.emplace_back(std::string(kv.key()), std::string(kv.value().as_string()));
    auto r = put(*store, target, std::move(h), abs, 0, size);
    if (r.status != 200)
      fail("the object store refused the upload: HTTP " + std::to_string(r.status) + " " +
           r.body.substr(0, 300));
    out.parts_sent = 1;
    out.bytes_sent = size;
    listener.sent(size);
  } else {
    const auto part_size = upload.at("part_size").to_number<std::uint64_t>();
    const auto count = upload.at("part_count").to_number<std::uint64_t>();
    std::vector<std::uint64_t> todo;
    if (auto* m = upload.if_contains("missing")) {
      for (const auto& v : m->as_array()) todo.push_back(v.to_number<std::uint64_t>());
    } else {
      for (std::uint64_t n = 1; n <= count; ++n) todo.push_back(n);
    }
    std::uint64_t held = size;
    for (auto n : todo) held -= n < count ? part_size : size - part_size * (count - 1);
    listener.held(held);
    if (out.resumed)
      listener.note("resuming " + id + ": " + std::to_string(todo.size()) + " of " +
                    std::to_string(count) + " parts to send");
    listener.upload(id, out.resumed, count, todo);
    try {
      send_parts(job, listener, base, id, abs, part_size, todo, out);
    } catch (const Failure& f) {
      fail(f.message + "\nkiln upload: run the same command again to resume");
    }
    if (listener.stopping()) {
      out.how = UploadOutcome::How::Interrupted;
      return out;
    }
  }
  auto [status, doc] = api.call("POST", base + "/" + id + "/complete");
  fs::remove(state_file);
  out.asset = doc.at("asset");
  return out;
}

}  // namespace kiln::client
