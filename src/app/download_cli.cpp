#include "app/download_cli.hpp"

#include "client/api_client.hpp"
#include "clients/s3/sigv4.hpp"
#include "platform/codec.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>

namespace kiln::app {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using client::fail;

std::string str(const json::object& o, const char* k) {
  const auto* v = o.if_contains(k);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

// The file name an asset is saved under: its name's last component, never a path.
fs::path target_for(const DownloadArgs& a, const std::string& asset_name) {
  if (!a.output.empty()) return a.output;
  const auto name = fs::path(asset_name).filename();
  if (name.empty() || name == "." || name == "..")
    fail("the asset's name '" + asset_name + "' is no file name: give one with -o FILE");
  return name;
}

int download(const DownloadArgs& a) {
  if (a.token.empty()) fail("no token: pass --token or set KILN_TOKEN");
  client::ApiClient api(a.api, a.token);
  auto [status, doc] = api.call("GET", "/v1/projects/" + a.project + "/assets/" + a.asset);
  if (!doc.is_object()) fail("the API answered HTTP " + std::to_string(status) + " without JSON");
  const auto& o = doc.as_object();
  const auto* dl = o.if_contains("download");
  if (!dl || !dl->is_object()) fail("this API gives no download for the asset (no object storage)");
  const auto url = str(dl->as_object(), "url");
  const auto sha = str(o, "sha256");
  const fs::path target = target_for(a, str(o, "name"));
  std::error_code ec;
  if (fs::exists(target, ec) && !a.force)
    fail(target.string() + " exists: choose another with -o FILE, or replace it with --force");

  // A new file of our own beside the target (O_EXCL, a random name: never a symlink or a
  // file someone placed there), renamed over the target only once it is whole and checked.
  const auto dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmpl = (dir / ".kiln-download-XXXXXX").string();
  const int fd = ::mkstemp(tmpl.data());
  if (fd < 0) fail("cannot create a file in " + dir.string() + ": " + std::strerror(errno));
  const fs::path part = tmpl;
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);  // mkstemp makes 0600; a saved file gets the usual mode
  bool fd_open = true;
  codec::Sha256 sha256;
  std::uint64_t bytes = 0;
  try {
    bool write_failed = false;
    client::fetch(url, [&](std::string_view b) {
      for (std::size_t off = 0; off < b.size() && !write_failed;) {
        const auto n = ::write(fd, b.data() + off, b.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          write_failed = true;
          break;
        }
        off += static_cast<std::size_t>(n);
      }
      sha256.update(b);
      bytes += b.size();
    });
    const bool synced = !write_failed && ::fsync(fd) == 0;
    fd_open = false;
    if (::close(fd) != 0 || !synced)
      fail("cannot write " + part.string() + ": " + std::strerror(errno) + " (disk full?)");
    const auto got = sha256.finish_hex();
    if (!sha.empty() && got != sha)
      fail("the downloaded bytes do not match the asset's SHA-256 (" + got + ", expected " + sha +
           "); nothing was saved");
  } catch (...) {
    if (fd_open) ::close(fd);
    fs::remove(part, ec);
    throw;
  }
  fs::rename(part, target, ec);
  if (ec) {
    const auto why = ec.message();
    fs::remove(part, ec);
    fail(
        "cannot save " + target.string() + ": " + why +
        (why.find("too long") != std::string::npos ? " (choose a shorter name with -o FILE)" : ""));
  }
  std::fprintf(stderr, "saved %s (%llu bytes%s)\n", target.string().c_str(),
               static_cast<unsigned long long>(bytes),
               sha.empty() ? "; not checked: the asset was uploaded without a SHA-256"
                           : ", SHA-256 checked");
  return 0;
}

}  // namespace

int run_download(const DownloadArgs& args) {
  try {
    return download(args);
  } catch (const client::Failure& f) {
    std::fprintf(stderr, "kiln download: %s\n", f.message.c_str());
    return 1;
  }
}

}  // namespace kiln::app
