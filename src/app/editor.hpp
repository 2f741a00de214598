// The web editor's static files (web/editor, built into web/editor/dist by
// scripts/build-editor.sh), served by a node with the API at `/` (index.html, for a browser)
// and `/editor/<name>`. They are read into memory once at start: a request's path only ever
// selects among the files found then and never reaches the filesystem.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

namespace kiln::app {

struct EditorFile {
  std::string name;          // relative to the directory, '/'-separated ("app-5HT2KQ3L.js")
  std::string content_type;  // from the extension (RFC 6838 types; text with charset=utf-8)
  std::string body;
  bool immutable = false;  // a content-hashed name (esbuild's "-[hash]."): cache for a year
};

inline constexpr std::size_t kMaxEditorFiles = 512;
inline constexpr std::uintmax_t kMaxEditorBytes = 64ull << 20;

// Every regular file under `dir` (symbolic links, other kinds and hidden names, starting
// with '.', are skipped), each path segment 1-128 characters of [A-Za-z0-9._-]; `index.html`
// must be among them, and be built (not web/editor/src's template with its placeholders). Throws
// std::runtime_error naming the directory and what is wrong: missing, no index.html, a name outside
// that alphabet, more than kMaxEditorFiles files or kMaxEditorBytes bytes.
std::vector<EditorFile> load_editor(const std::filesystem::path& dir);

// The media type served for a file name (by extension; application/octet-stream otherwise).
std::string editor_content_type(const std::string& name);

}  // namespace kiln::app
