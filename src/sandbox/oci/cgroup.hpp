// Where the kernel counts a sandbox's out-of-memory kills, read from its init's
// /proc/<pid>/cgroup (cgroups v1 and v2, at their standard mount points under
// /sys/fs/cgroup): runc makes and removes the cgroup; Kiln only reads one counter of it
// (`oom_kill`, in memory.oom_control on v1 and memory.events on v2; Linux 4.13 and later).
// Pure: the driver reads the files.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace kiln::sandbox::oci {

// The file holding the memory cgroup's `oom_kill` counter, from a /proc/<pid>/cgroup's
// text: the v1 memory controller's line when there is one, else the v2 (unified) line.
// nullopt when neither is there.
std::optional<std::string> oom_counter_file(std::string_view proc_cgroup,
                                            std::string_view root = "/sys/fs/cgroup");

// The `oom_kill` value in such a file's text; nullopt without one.
std::optional<std::uint64_t> oom_kills(std::string_view counter_file_text);

}  // namespace kiln::sandbox::oci
