#include "app/download_cli.hpp"

#include "app/api_client.hpp"
#include "s3/sigv4.hpp"

#include <openssl/evp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

namespace kiln::app {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using cli::fail;

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
  cli::ApiClient api(a.api, a.token);
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

  fs::path part = target;
  part += ".kiln-download";
  std::ofstream out(part, std::ios::binary | std::ios::trunc);
  if (!out) fail("cannot write " + part.string());
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::uint64_t bytes = 0;
  try {
    cli::fetch(url, [&](std::string_view b) {
      out.write(b.data(), static_cast<std::streamsize>(b.size()));
      EVP_DigestUpdate(ctx.get(), b.data(), b.size());
      bytes += b.size();
    });
    out.close();
    if (!out) fail("cannot write " + part.string() + " (disk full?)");
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    const auto got = s3::hex(std::string_view(reinterpret_cast<char*>(md), len));
    if (!sha.empty() && got != sha)
      fail("the downloaded bytes do not match the asset's SHA-256 (" + got + ", expected " + sha +
           "); nothing was saved");
  } catch (...) {
    fs::remove(part, ec);
    throw;
  }
  fs::rename(part, target, ec);
  if (ec) {
    fs::remove(part, ec);
    fail("cannot save " + target.string() + ": " + ec.message());
  }
  std::fprintf(stderr, "saved %s (%llu bytes)\n", target.string().c_str(),
               static_cast<unsigned long long>(bytes));
  return 0;
}

}  // namespace

int run_download(const DownloadArgs& args) {
  try {
    return download(args);
  } catch (const cli::Failure& f) {
    std::fprintf(stderr, "kiln download: %s\n", f.message.c_str());
    return 1;
  }
}

}  // namespace kiln::app
