// What a sandbox is asked to be (issue #20): the command, its terminal, its limits and what
// it sees of the host. Drivers (oci/: runc; microvm/: QEMU, later) turn a checked spec into
// their runtime's terms; validate() is the one place its rules live.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kiln::sandbox {

struct Limits {
  std::uint64_t memory_bytes = 512ull << 20;  // cgroup memory limit (swap included: none extra)
  std::uint32_t pids = 128;                   // processes and threads at once (cgroup pids)
  double cpus = 1.0;                          // CPU time per second of wall time (cgroup quota)
  // The writable work directory: a tmpfs this size, and /tmp a quarter of it. tmpfs is
  // memory: both count against memory_bytes, so together they must leave room for the
  // programs (validate(): 1.25 x disk_bytes + 32 MiB at most memory_bytes); a full /work is
  // then ENOSPC, never an out-of-memory kill.
  std::uint64_t disk_bytes = 256ull << 20;
  std::uint32_t files = 65'536;     // files in /work, and in /tmp, each (tmpfs inodes)
  std::uint32_t open_files = 1024;  // RLIMIT_NOFILE
  bool network = false;             // false: an empty network namespace (loopback only)
};

// A host directory shown inside. Read-only unless asked.
struct Mount {
  std::string source;       // absolute host path
  std::string destination;  // absolute path inside
  bool read_only = true;
};

struct SandboxSpec {
  std::string id;                 // 1-64 characters of [a-z0-9-], starting with a letter or digit
  std::vector<std::string> args;  // argv; args[0] is looked up in PATH inside
  std::vector<std::pair<std::string, std::string>> env;  // added to PATH, HOME, TERM
  std::string cwd = "/work";                             // absolute, inside
  bool terminal = false;                 // a pty (a shell for a person) instead of pipes
  std::uint16_t uid = 1000, gid = 1000;  // inside the sandbox's user namespace
  Limits limits;
  std::vector<Mount> mounts;  // beyond the read-only system directories every sandbox sees
};

// The first rule the spec breaks, in words naming the field; empty when it keeps them all:
// id as above; 1-256 args, none empty or holding NUL, at most 128 KiB together; env names
// [A-Za-z_][A-Za-z0-9_]*, values without NUL, at most 256 entries; cwd and mount paths
// absolute, normalised (no "." or ".." segments, no "//", no NUL); mount destinations
// not "/" nor under /proc, /sys or /dev, each at most once; limits within: memory 16 MiB-
// 64 GiB, pids 1-65,536, cpus 0.01-64, disk 1 MiB-1 TiB and 1.25 x disk + 32 MiB within memory,
// files 16-10,000,000, open files 16-1,048,576.
std::string validate(const SandboxSpec& spec);

// Whether `path` is absolute and normalised as validate() requires.
bool clean_absolute_path(const std::string& path);

}  // namespace kiln::sandbox
