// The POSIX file steps the journal is made of: whole writes at an offset, whole reads,
// directory fsyncs and small files replaced atomically. Errors are errno values (or
// false); nothing here throws.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace kiln::journal::files {

// strerror(e).
std::string errno_text(int e);

// Writes all of `data` at `offset` (retrying short writes and EINTR); false with `err` set.
bool pwrite_all(int fd, std::string_view data, std::uint64_t offset, int& err);

// fsync of a directory, so that a file created or renamed in it survives a power loss.
// Best effort: a directory that cannot be opened is left as it is.
void sync_dir(const std::filesystem::path& dir);

// The whole file into `out` (procfs files included, whose size reads as 0); false when it
// cannot be opened (errno set).
bool read_file(const std::filesystem::path& path, std::string& out);

// Replaces `path` with `text` atomically (a temporary file, fsync, rename, directory
// fsync); false on failure.
bool write_small_file(const std::filesystem::path& path, const std::string& text);

}  // namespace kiln::journal::files
