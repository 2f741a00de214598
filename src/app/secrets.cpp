#include "app/secrets.hpp"

#include "platform/ids.hpp"
#include "platform/log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace kiln::app {
namespace {

namespace fs = std::filesystem;
constexpr std::size_t kMinSecret = 32;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// The configured secret, or one generated once into <data.dir>/<file> (mode 0600).
std::string secret_or_file(const config::Config& cfg, const char* setting, const char* file) {
  const std::string& configured = cfg.str(setting);
  if (!configured.empty()) {
    if (configured.size() < kMinSecret) {
      throw config::ConfigError(std::string("setting '") + setting + "' is shorter than 32 bytes");
    }
    return configured;
  }
  const fs::path dir = fs::absolute(cfg.str("data.dir"));
  const fs::path path = dir / file;
  std::error_code ec;
  fs::create_directories(dir, ec);
  // O_EXCL: two processes starting at once agree on one secret.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
  if (fd >= 0) {
    const std::string secret = ids::random_hex(32);
    const bool ok =
        ::write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size());
    ::close(fd);
    if (!ok) throw config::ConfigError("cannot write " + path.string());
    log::info("generated a secret", {{"setting", setting}, {"path", path.string()}});
    return secret;
  }
  std::string secret = read_file(path);
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.size() < kMinSecret) {
    throw config::ConfigError(path.string() + " holds no usable secret (at least 32 bytes)");
  }
  return secret;
}

}  // namespace

std::string existing_jwt_secret(const config::Config& cfg) {
  if (cfg.str("auth.jwt_secret").empty()) {
    const fs::path path = (fs::absolute(cfg.str("data.dir")) / "jwt-secret").lexically_normal();
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      throw config::ConfigError(
          "no token secret at " + path.string() +
          ": this command signs with the secret of an existing `kiln serve`, which keeps it "
          "in its data directory. Point at it with --data-dir DIR (or KILN_DATA_DIR), or "
          "give the secret with --auth-jwt-secret");
    }
  }
  return jwt_secret(cfg);
}

std::string jwt_secret(const config::Config& cfg) {
  return secret_or_file(cfg, "auth.jwt_secret", "jwt-secret");
}

std::string objects_secret(const config::Config& cfg) {
  return secret_or_file(cfg, "objects.secret_key", "objects-secret");
}

std::string service_key(const config::Config& cfg) {
  return secret_or_file(cfg, "api.service_key", "service-key");
}

auth::Verifier make_verifier(const config::Config& cfg) {
  const auto skew = std::chrono::seconds(cfg.integer("auth.clock_skew_s"));
  const std::string& key_file = cfg.str("auth.jwt_public_key_file");
  if (!key_file.empty()) {
    std::string pem = read_file(key_file);
    try {
      return auth::Verifier::rs256(pem, skew);
    } catch (const std::exception& e) {
      throw config::ConfigError("setting 'auth.jwt_public_key_file' (" + key_file +
                                "): " + e.what());
    }
  }
  return auth::Verifier::hs256(jwt_secret(cfg), skew);
}

}  // namespace kiln::app
