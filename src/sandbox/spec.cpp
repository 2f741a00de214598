#include "sandbox/spec.hpp"

#include <algorithm>
#include <set>

namespace kiln::sandbox {
namespace {

bool valid_id(const std::string& id) {
  if (id.empty() || id.size() > 64 || id[0] == '-') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

bool valid_env_name(const std::string& n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9')) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

bool has_nul(const std::string& s) {
  return s.find('\0') != std::string::npos;
}

bool under(const std::string& path, const std::string& dir) {
  return path == dir || (path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
                         path[dir.size()] == '/');
}

}  // namespace

bool clean_absolute_path(const std::string& path) {
  if (path.empty() || path[0] != '/' || has_nul(path) || path.size() > 4096) return false;
  if (path.size() > 1 && path.back() == '/') return false;
  std::size_t start = 1;
  while (start <= path.size()) {
    const auto end = std::min(path.find('/', start), path.size());
    const auto seg = path.substr(start, end - start);
    if (path.size() > 1 && (seg.empty() || seg == "." || seg == "..")) return false;
    start = end + 1;
  }
  return true;
}

std::string validate(const SandboxSpec& s) {
  if (!valid_id(s.id)) return "id: 1-64 characters of [a-z0-9-], not starting with '-'";
  if (s.args.empty() || s.args.size() > 256) return "args: 1-256 arguments";
  std::size_t total = 0;
  for (const auto& a : s.args) {
    if (a.empty() || has_nul(a)) return "args: an argument is empty or holds NUL";
    total += a.size();
  }
  if (total > 128 * 1024) return "args: more than 128 KiB together";
  if (s.env.size() > 256) return "env: more than 256 variables";
  for (const auto& [name, value] : s.env) {
    if (!valid_env_name(name)) return "env: '" + name + "' is not a variable name";
    if (has_nul(value)) return "env: the value of " + name + " holds NUL";
  }
  if (!clean_absolute_path(s.cwd)) return "cwd: an absolute, normalised path";
  std::set<std::string> seen;
  for (const auto& m : s.mounts) {
    if (!clean_absolute_path(m.source))
      return "mounts: source '" + m.source + "' is not an absolute, normalised path";
    if (!clean_absolute_path(m.destination) || m.destination == "/")
      return "mounts: destination '" + m.destination +
             "' is not an absolute, normalised path below /";
    for (const char* d : {"/proc", "/sys", "/dev"}) {
      if (under(m.destination, d))
        return "mounts: destination '" + m.destination + "' is under " + d;
    }
    if (!seen.insert(m.destination).second) return "mounts: '" + m.destination + "' mounted twice";
  }
  const auto& l = s.limits;
  if (l.memory_bytes < (16ull << 20) || l.memory_bytes > (64ull << 30))
    return "limits.memory_bytes: 16 MiB to 64 GiB";
  if (l.pids < 1 || l.pids > 65536) return "limits.pids: 1 to 65,536";
  if (!(l.cpus >= 0.01 && l.cpus <= 64)) return "limits.cpus: 0.01 to 64";
  if (l.disk_bytes < (1ull << 20) || l.disk_bytes > (1ull << 40))
    return "limits.disk_bytes: 1 MiB to 1 TiB";
  if (l.disk_bytes + l.disk_bytes / 4 + (32ull << 20) > l.memory_bytes)
    return "limits.disk_bytes: /work and /tmp are memory (tmpfs) and count against "
           "limits.memory_bytes: 1.25 x disk_bytes + 32 MiB must fit in it (at most " +
           std::to_string(l.memory_bytes > (32ull << 20)
                              ? ((l.memory_bytes - (32ull << 20)) * 4 / 5) >> 20
                              : 0) +
           " MiB here)";
  if (l.files < 16 || l.files > 10'000'000) return "limits.files: 16 to 10,000,000";
  if (l.open_files < 16 || l.open_files > 1048576) return "limits.open_files: 16 to 1,048,576";
  return {};
}

}  // namespace kiln::sandbox
