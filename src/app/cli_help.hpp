// The `kiln` command line's help and its answers to mistakes: commands first, each with its
// own flags, then the settings by section with their types; an unknown flag is named with
// the nearest known one. Every usage error exits with 2 (docs/configuration.md).
#pragma once

#include "platform/config.hpp"

#include <optional>
#include <string>

namespace CLI {
class App;
}

namespace kiln::app {

// The help for `kiln --help` (command null) or `kiln COMMAND --help`.
std::string help_text(const CLI::App& app, const CLI::App* command, const config::Schema& schema);

// The first `--flag` in argv that no command or setting knows, with the nearest known flag
// when one is close (edit distance at most 2, or a third of its length):
// "unknown flag '--projcet'; did you mean '--project'?". Nullopt when every flag is known.
std::optional<std::string> unknown_flag(const CLI::App& app, int argc, char** argv);

// A word where a command belongs that is close to one ("srve"): "unknown command 'srve'; did
// you mean 'serve'?". Nullopt when a known command is given or nothing is close.
std::optional<std::string> unknown_command(const CLI::App& app, int argc, char** argv);

// Levenshtein distance (insertions, deletions, substitutions), for the suggestion above.
std::size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace kiln::app
