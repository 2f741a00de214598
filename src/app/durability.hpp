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
namespace collab {
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
                                               collab::MemoryRoomEngine& engine);

}  // namespace kiln::app
