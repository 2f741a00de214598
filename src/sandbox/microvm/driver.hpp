// The `microvm` sandbox driver: each sandbox is a virtual machine of its own, QEMU's
// `microvm` machine type (Debian's qemu-system-x86), booting Debian's kernel and an initramfs
// that scripts/microvm-image.sh builds from Debian packages (busybox, the kernel's virtio
// modules, Kiln's init: init.sh). The host's /usr is shown read-only over virtio-9p (what
// the oci driver binds); /work and /tmp are the guest's tmpfs; no network device at all.
//
// The guest's init is the agent: it applies the spec's limits to a cgroup (memory, pids) in
// the guest, runs the command as uid 1000 when asked, and reports its end. The host talks
// to it over virtio-serial ports, each a Unix socket here: a console (hvc0, the command's
// terminal), a control port (lines, described in init.sh) and a port for the command's
// stdio when it has no terminal. prepare() boots the machine and has the agent ready the
// command up to its last exec, behind a gate (a warm pool holds such machines); start() sets
// the terminal's size and opens the gate; the machine powers off when the command ends, and
// destroy() kills QEMU.
//
// KVM is used when /dev/kvm boots guests (probed once per driver: /dev/kvm can be there
// where a nested hypervisor runs no guest), TCG (emulation) otherwise: slow (seconds to
// boot), but the same isolation. Not done (the oci driver's): exec (one command per
// machine), mounts beyond /usr, network, a CPU quota finer than whole vCPUs. A command's end
// by signal N and its exit with 128 + N look the same (the guest's shell reports both so).
#pragma once

#include "sandbox/sandbox.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln::sandbox::microvm {

// A machine in the terms of Firecracker's API (the bodies of its PUT /boot-source and
// /machine-config); shares are virtio-9p (which Firecracker lacks; its drives are block
// devices), ports virtio-serial.
struct BootSource {
  std::string kernel_image_path;  // an uncompressed-header bzImage (Debian's vmlinuz)
  std::string initrd_path;        // a gzip'd newc cpio
  std::string boot_args;          // the kernel's command line
};
struct MachineConfig {
  unsigned vcpu_count = 1;
  std::uint64_t mem_size_mib = 128;
};
struct SharedDirectory {
  std::string tag;  // the guest mounts it by this name
  std::string path_on_host;
  bool is_read_only = true;
};
struct SerialPort {
  std::string name;         // the guest's /sys/class/virtio-ports/*/name
  std::string socket_path;  // a Unix socket QEMU connects to (Kiln listens)
};
struct VmConfig {
  BootSource boot_source;
  MachineConfig machine_config;
  std::vector<SharedDirectory> shares;
  std::vector<SerialPort> ports;  // the first is a console (hvc0), the others vport0p1, ...
  std::string console_log;        // the kernel's console (ttyS0) goes to this file
  std::string accel = "kvm:tcg";  // QEMU accelerators tried in order
};

// QEMU's command line for `config` (the arguments after the binary).
std::vector<std::string> qemu_args(const VmConfig& config);

// The host's TSC frequency in kHz, from /proc/cpuinfo (0 when it does not say): a guest
// under TCG is told it on its command line (tsc_early_khz) or its boot hangs now and then.
std::uint32_t host_tsc_khz();

struct MicrovmOptions {
  std::string qemu = "qemu-system-x86_64";
  std::string kernel;     // vmlinuz (scripts/microvm-image.sh)
  std::string initrd;     // initramfs.gz
  std::string state_dir;  // one directory per sandbox (absolute; short: sockets live there)
  std::string accel = "kvm:tcg";
  std::string usr = "/usr";  // shared read-only as the guest's /usr
  // The guest's RAM beyond the sandbox's limit: its kernel, init and reserves (~100 MiB at
  // rest), so that the cgroup's limit is what kills, not the whole guest running out.
  std::uint64_t guest_overhead_bytes = 192ull << 20;
  std::chrono::milliseconds boot_timeout{60'000};   // to the agent's "ready"
  std::chrono::milliseconds reply_timeout{10'000};  // to an answer on the control port
};

class MicrovmDriver final : public Driver {
 public:
  explicit MicrovmDriver(MicrovmOptions options);
  ~MicrovmDriver() override;
  [[nodiscard]] std::string_view name() const override { return "microvm"; }
  // Errc::invalid also for what this driver does not do: mounts, network.
  Result<std::unique_ptr<Sandbox>, Error> create(const SandboxSpec& spec) override;

  // Whether machines can run here: QEMU's version line (and the accelerators, when KVM is
  // left out), or Errc::unavailable saying why not
  // (no QEMU, no kernel or initramfs, the state directory not writable).
  [[nodiscard]] Result<std::string, Error> check() const;

  // Machines' directories left by a process that ended without destroying them (their QEMU
  // died with it: PR_SET_PDEATHSIG): removed. Returns how many. At start, before any
  // sandbox of this driver's exists.
  std::size_t remove_leftovers();

 private:
  // options_.accel, without kvm where /dev/kvm does not boot a guest (probed once, ~3 s
  // there; at once where KVM works or is absent).
  const std::string& accel() const;

  struct Ids;
  MicrovmOptions options_;
  std::shared_ptr<Ids> ids_;
};

}  // namespace kiln::sandbox::microvm
