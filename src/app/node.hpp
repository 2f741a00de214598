// The composition root: builds a node (event loop, metrics, health, HTTP server and the
// roles asked for) from a validated Config and runs it until a signal drains it.
#pragma once

#include "platform/config.hpp"

#include <string>
#include <vector>

namespace kiln::app {

// Runs the given roles in one process. Returns the process exit code.
int run_node(const config::Config& config, const std::string& role_name);

}  // namespace kiln::app
