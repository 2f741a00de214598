// For tests: SQLite databases in a directory of the test process's own
// (<temp>/kiln-test-<pid>), removed with everything in it when the process exits.
#pragma once

#include "store/database.hpp"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <system_error>

namespace kiln::store::test {

class ProcessDirectory {
 public:
  ProcessDirectory()
      : path_(std::filesystem::temp_directory_path() /
              ("kiln-test-" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);  // a previous process's with the same pid
    std::filesystem::create_directories(path_);
  }
  ~ProcessDirectory() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ProcessDirectory(const ProcessDirectory&) = delete;
  ProcessDirectory& operator=(const ProcessDirectory&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The directory (made on first use).
inline const std::filesystem::path& process_directory() {
  static const ProcessDirectory dir;
  return dir.path();
}

// A new, empty SQLite database file for one test: `<name>-<n>.db` in the process directory.
inline DatabaseOptions temp_sqlite(const std::string& name) {
  static std::atomic<int> n{0};
  DatabaseOptions o;
  o.url = "sqlite:" + (process_directory() / (name + "-" + std::to_string(++n) + ".db")).string();
  return o;
}

}  // namespace kiln::store::test
