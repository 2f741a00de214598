#include "sandbox/oci/config.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace kiln::sandbox::oci {
namespace {

namespace json = boost::json;

json::array strings(std::initializer_list<const char*> list) {
  json::array a;
  for (const char* s : list) a.emplace_back(s);
  return a;
}

json::object mount(const std::string& dest, const char* type, const std::string& source,
                   json::array options) {
  return {
      {"destination", dest}, {"type", type}, {"source", source}, {"options", std::move(options)}};
}

json::object bind(const std::string& source, const std::string& dest, bool read_only) {
  json::array o = strings({"rbind", "nosuid", "nodev"});
  o.emplace_back(read_only ? "ro" : "rw");
  return mount(dest, "bind", source, std::move(o));
}

json::array mounts(const SandboxSpec& s, const OciHost& h) {
  json::array m;
  m.push_back(mount("/proc", "proc", "proc", strings({"nosuid", "noexec", "nodev"})));
  m.push_back(
      mount("/dev", "tmpfs", "tmpfs",
            strings({"nosuid", "strictatime", "mode=755", "size=65536k", "nr_inodes=4096"})));
  m.push_back(
      mount("/dev/pts", "devpts", "devpts",
            strings({"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"})));
  m.push_back(
      mount("/dev/shm", "tmpfs", "shm",
            strings({"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", "nr_inodes=4096"})));
  m.push_back(mount("/dev/mqueue", "mqueue", "mqueue", strings({"nosuid", "noexec", "nodev"})));
  // No /sys: the host's (bound) would show every cgroup on the host, its disks and network
  // devices; a sysfs of its own still shows the host's block devices. /proc is its own.
  for (const auto& d : h.system_dirs) m.push_back(bind(d, d, true));
  for (const auto& f : h.etc_shared) m.push_back(bind(f, f, true));
  json::array work = strings({"nosuid", "nodev", "mode=0755"});
  const auto files = "nr_inodes=" + std::to_string(s.limits.files);
  work.emplace_back("size=" + std::to_string(s.limits.disk_bytes));
  work.emplace_back(files);
  work.emplace_back("uid=" + std::to_string(s.uid));
  work.emplace_back("gid=" + std::to_string(s.gid));
  m.push_back(mount("/work", "tmpfs", "tmpfs", std::move(work)));
  json::array tmp = strings({"nosuid", "nodev", "mode=1777"});
  tmp.emplace_back("size=" +
                   std::to_string(std::max<std::uint64_t>(s.limits.disk_bytes / 4, 1 << 20)));
  tmp.emplace_back(files);
  m.push_back(mount("/tmp", "tmpfs", "tmpfs", std::move(tmp)));
  for (const auto& u : s.mounts) m.push_back(bind(u.source, u.destination, u.read_only));
  return m;
}

json::object seccomp() {
  json::array names;
  for (const auto& n : denied_syscalls()) names.emplace_back(n);
  json::array rules{
      json::object{{"names", std::move(names)}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 1}}};
  // clone with a namespace flag: EPERM (unshare and setns are denied above), one rule per
  // flag (a rule's conditions are ANDed; SCMP_CMP_MASKED_EQ: (flags & flag) == flag).
  for (const std::int64_t flag :
       {0x00020000LL /* CLONE_NEWNS */, 0x02000000LL /* NEWCGROUP */, 0x04000000LL /* NEWUTS */,
        0x08000000LL /* NEWIPC */, 0x10000000LL /* NEWUSER */, 0x20000000LL /* NEWPID */,
        0x40000000LL /* NEWNET */})
    rules.push_back(json::object{
        {"names", json::array{"clone"}},
        {"action", "SCMP_ACT_ERRNO"},
        {"errnoRet", 1},
        {"args",
         json::array{json::object{
             {"index", 0}, {"value", flag}, {"valueTwo", flag}, {"op", "SCMP_CMP_MASKED_EQ"}}}}});
  // clone3 passes its flags in memory, which seccomp cannot read: ENOSYS, so that the C
  // library falls back to clone (as Docker's default profile does).
  rules.push_back(json::object{
      {"names", json::array{"clone3"}}, {"action", "SCMP_ACT_ERRNO"}, {"errnoRet", 38}});
  return {{"defaultAction", "SCMP_ACT_ALLOW"},
          {"architectures", strings({"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"})},
          {"syscalls", std::move(rules)}};
}

}  // namespace

json::object process(const SandboxSpec& s) {
  json::array args;
  for (const auto& a : s.args) args.emplace_back(a);
  json::array env;
  env.emplace_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  env.emplace_back("HOME=/work");
  env.emplace_back(s.terminal ? "TERM=xterm-256color" : "TERM=dumb");
  for (const auto& [k, v] : s.env) env.emplace_back(k + "=" + v);
  json::object caps;
  for (const char* set : {"bounding", "effective", "inheritable", "permitted", "ambient"})
    caps[set] = json::array{};
  const auto nofile = static_cast<std::int64_t>(s.limits.open_files);
  return {{"terminal", s.terminal},
          {"user", {{"uid", s.uid}, {"gid", s.gid}}},
          {"args", std::move(args)},
          {"env", std::move(env)},
          {"cwd", s.cwd},
          {"capabilities", std::move(caps)},
          {"rlimits",
           json::array{json::object{{"type", "RLIMIT_NOFILE"}, {"hard", nofile}, {"soft", nofile}},
                       json::object{{"type", "RLIMIT_CORE"}, {"hard", 0}, {"soft", 0}}}},
          {"noNewPrivileges", true},
          {"oomScoreAdj", 500}};
}

const std::vector<std::string>& default_etc_shared() {
  static const std::vector<std::string> paths{
      "/etc/alternatives", "/etc/bash.bashrc", "/etc/ca-certificates", "/etc/debian_version",
      "/etc/inputrc",      "/etc/ld.so.cache", "/etc/ld.so.conf",      "/etc/ld.so.conf.d",
      "/etc/localtime",    "/etc/mime.types",  "/etc/nsswitch.conf",   "/etc/os-release",
      "/etc/profile",      "/etc/profile.d",   "/etc/python3",         "/etc/shells",
      "/etc/ssl",          "/etc/terminfo",    "/etc/timezone"};
  return paths;
}

std::vector<std::pair<std::string, std::string>> etc_files(const SandboxSpec& s) {
  const auto uid = std::to_string(s.uid), gid = std::to_string(s.gid);
  return {{"passwd",
           "root:x:0:0:root:/root:/usr/sbin/nologin\n"
           "kiln:x:" +
               uid + ":" + gid +
               ":Kiln sandbox:/work:/bin/sh\n"
               "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
          {"group", "root:x:0:\ntty:x:5:\nkiln:x:" + gid + ":\nnogroup:x:65534:\n"},
          {"hosts", "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
          {"hostname", "sandbox\n"}};
}

const std::vector<std::string>& denied_syscalls() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v{"acct",
                               "add_key",
                               "adjtimex",
                               "bpf",
                               "clock_adjtime",
                               "clock_settime",
                               "create_module",
                               "delete_module",
                               "fanotify_init",
                               "finit_module",
                               "get_kernel_syms",
                               "init_module",
                               "io_uring_enter",
                               "io_uring_register",
                               "io_uring_setup",
                               "ioperm",
                               "iopl",
                               "kcmp",
                               "kexec_file_load",
                               "kexec_load",
                               "keyctl",
                               "lookup_dcookie",
                               "mount",
                               "move_mount",
                               "name_to_handle_at",
                               "nfsservctl",
                               "open_by_handle_at",
                               "open_tree",
                               "perf_event_open",
                               "pivot_root",
                               "process_vm_readv",
                               "process_vm_writev",
                               "ptrace",
                               "query_module",
                               "quotactl",
                               "reboot",
                               "request_key",
                               "setns",
                               "settimeofday",
                               "swapoff",
                               "swapon",
                               "syslog",
                               "umount2",
                               "unshare",
                               "uselib",
                               "userfaultfd",
                               "ustat",
                               "vhangup"};
    std::sort(v.begin(), v.end());
    return v;
  }();
  return names;
}

json::object config(const SandboxSpec& s, const OciHost& h) {
  if (auto problem = validate(s); !problem.empty())
    throw std::invalid_argument("sandbox spec: " + problem);
  if (!clean_absolute_path(h.rootfs)) throw std::invalid_argument("rootfs: an absolute path");
  json::array namespaces;
  for (const char* ns : {"pid", "ipc", "uts", "mount", "user"})
    namespaces.push_back(json::object{{"type", ns}});
  if (!s.limits.network) namespaces.push_back(json::object{{"type", "network"}});
  const auto memory = static_cast<std::int64_t>(s.limits.memory_bytes);
  const auto period = static_cast<std::int64_t>(h.cpu_period_us);
  const auto quota =
      static_cast<std::int64_t>(std::llround(s.limits.cpus * static_cast<double>(period)));
  json::object linux{
      {"uidMappings",
       json::array{{{"containerID", 0}, {"hostID", h.uid_base}, {"size", h.id_range}}}},
      {"gidMappings",
       json::array{{{"containerID", 0}, {"hostID", h.gid_base}, {"size", h.id_range}}}},
      {"namespaces", std::move(namespaces)},
      {"resources",
       {{"memory", {{"limit", memory}, {"swap", memory}}},
        {"pids", {{"limit", static_cast<std::int64_t>(s.limits.pids)}}},
        {"cpu", {{"quota", quota}, {"period", period}}}}},
      {"seccomp", seccomp()},
      {"maskedPaths", strings({"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                               "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                               "/proc/sched_debug", "/proc/scsi", "/sys/firmware"})},
      {"readonlyPaths",
       strings({"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"})}};
  return {{"ociVersion", "1.0.2"},
          {"process", process(s)},
          {"root", {{"path", h.rootfs}, {"readonly", true}}},
          {"hostname", "sandbox"},
          {"mounts", mounts(s, h)},
          {"linux", std::move(linux)}};
}

}  // namespace kiln::sandbox::oci
