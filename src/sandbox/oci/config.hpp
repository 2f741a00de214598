// The OCI runtime configuration (config.json of a bundle; OCI Runtime Specification 1.0.2,
// as runc 1.1 reads it) for a checked SandboxSpec. Pure: the driver writes the bundle and
// runs the runtime; namespaces, cgroups and seccomp are the runtime's work, not Kiln's.
//
// What every sandbox gets:
// - a read-only root (a directory of the driver's, holding an /etc of its own: passwd and
//   group naming only the sandbox's users, hosts, hostname) with the host's system
//   directories bound read-only, nosuid, nodev (`OciHost::system_dirs`: /usr, /bin, /lib,
//   not /etc), the few host files under /etc that programs need (`OciHost::etc_shared`:
//   the loader's cache, alternatives, shell profiles, terminfo, CA certificates...), plus
//   the spec's mounts (nosuid, nodev; read-only unless asked);
// - a writable work directory (`/work`, tmpfs of limits.disk_bytes and limits.files inodes,
//   owned by the spec's uid/gid) and /tmp (tmpfs, a quarter of that, limits.files inodes),
//   /dev and /dev/shm (tmpfs), /dev/pts, /proc (its own), the runtime's masked and
//   read-only paths;
// - user, pid, mount, ipc, uts namespaces, and network unless limits.network (then it
//   shares the host's); container uid/gid 0-65535 mapped to host `uid_base`...;
// - no capabilities, no_new_privileges, RLIMIT_NOFILE and RLIMIT_CORE 0;
// - cgroup limits: memory (no extra swap), pids, CPU quota per period;
// - a seccomp filter: allow by default, EPERM for the calls that reach outside the sandbox
//   (ptrace and process_vm_*, mount, namespaces, clone with a namespace flag, keyrings, bpf,
//   perf, modules, kexec, reboot, swap, clocks, handles to host files, userfaultfd, io_uring,
//   I/O ports); clone3 ENOSYS (its flags cannot be inspected; the C library falls back);
// - no /sys (the host's would show every cgroup, disk and network device on the host).
#pragma once

#include "sandbox/spec.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace kiln::sandbox::oci {

struct OciHost {
  std::string rootfs;                   // the bundle's root: absolute, an empty directory
  std::uint32_t uid_base = 100'000;     // host uid of the container's uid 0
  std::uint32_t gid_base = 100'000;     // host gid of the container's gid 0
  std::uint32_t id_range = 65'536;      // uids and gids mapped
  std::vector<std::string> system_dirs  // bound read-only; the driver passes those that exist
      {"/usr", "/bin", "/lib", "/lib64"};
  std::vector<std::string> etc_shared;  // host paths under /etc bound read-only (existing)
  std::uint64_t cpu_period_us = 100'000;
};

// The calls the seccomp filter refuses with EPERM (sorted).
const std::vector<std::string>& denied_syscalls();

// The process object of config.json for `spec` (also what `runc exec --process` reads):
// args, env, cwd, terminal, user, no capabilities, rlimits, no_new_privileges.
boost::json::object process(const SandboxSpec& spec);

// What programs need from the host's /etc (the driver binds those that exist; with network,
// /etc/resolv.conf too). Nothing that names the host's users, services or secrets.
const std::vector<std::string>& default_etc_shared();

// The sandbox's own /etc files, by name: passwd and group (root, the spec's uid and gid as
// "kiln", nobody), hosts, hostname.
std::vector<std::pair<std::string, std::string>> etc_files(const SandboxSpec& spec);

// config.json for `spec`, which validate() accepted (std::invalid_argument otherwise).
boost::json::object config(const SandboxSpec& spec, const OciHost& host);

}  // namespace kiln::sandbox::oci
