// `kiln serve`'s journal, wired: opened from the journal.* settings, its metrics registered,
// the memory engine given what it replays.
#pragma once

#include "journal/journal.hpp"

#include <filesystem>
#include <memory>

namespace kiln {
namespace config {
class Config;
}
namespace metrics {
class Registry;
}
namespace engines {
class MemoryRoomEngine;
}
}  // namespace kiln

namespace kiln::app {

// Opens the journal in `dir` and hands the engine what it holds. Throws
// std::runtime_error (with the path and reason) when it cannot be opened. The journal must
// outlive the engine's use of it and be destroyed before the engine.
std::unique_ptr<journal::Journal> open_journal(const config::Config& cfg,
                                               const std::filesystem::path& dir,
                                               metrics::Registry& registry,
                                               engines::MemoryRoomEngine& engine);

// The node id kept in <dir>/node-id, `fresh` written there on first use; "" when it cannot
// be kept. `kiln serve` is one node for good: the id holds its persister leases, so a
// restart after a crash does not wait for its own leases to expire.
std::string stable_node_id(const std::filesystem::path& dir, const std::string& fresh);

// An exclusive lock on <dir>/lock for the life of the process (the kernel releases it when
// the process ends, however it ends); false when another process holds it.
bool lock_data_dir(const std::filesystem::path& dir);

// journal.enabled is false but `dir` holds segments: logs that they are not replayed.
void warn_unread_journal(const std::filesystem::path& dir);

}  // namespace kiln::app
