#include "app/editor.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <system_error>

namespace kiln::app {
namespace {

namespace fs = std::filesystem;

bool valid_segment(const std::string& s) {
  return !s.empty() && s.size() <= 128 && s[0] != '.' &&
         std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
         });
}

// esbuild's `[name]-[hash]`: a '-' then 8 characters of [A-Z0-9] right before the extension.
bool hashed(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos || dot < 9 || name[dot - 9] != '-') return false;
  return std::all_of(name.begin() + static_cast<std::ptrdiff_t>(dot - 8),
                     name.begin() + static_cast<std::ptrdiff_t>(dot),
                     [](char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); });
}

}  // namespace

std::string editor_content_type(const std::string& name) {
  static const std::pair<const char*, const char*> kTypes[] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/vnd.microsoft.icon"},
      {".woff2", "font/woff2"},
      {".wasm", "application/wasm"},
      {".txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [ext, type] : kTypes) {
    const std::string e(ext);
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0)
      return type;
  }
  return "application/octet-stream";
}

std::vector<EditorFile> load_editor(const fs::path& dir) {
  const auto where = "web editor directory " + dir.string() + " (setting http.editor_dir)";
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error(where +
                             ": not a directory; build it with bash scripts/build-editor.sh");
  std::vector<EditorFile> files;
  std::uintmax_t total = 0;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::none, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const auto& entry = *it;
    // Hidden files and folders (.env, .git) are never served; symbolic links neither.
    if (entry.path().filename().string().starts_with(".")) {
      if (entry.is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (entry.is_symlink(ec) || !entry.is_regular_file(ec)) continue;
    const auto rel = fs::relative(entry.path(), dir, ec).generic_string();
    std::string segment;
    for (std::size_t i = 0; i <= rel.size(); ++i) {
      if (i == rel.size() || rel[i] == '/') {
        if (!valid_segment(segment))
          throw std::runtime_error(where + ": file name '" + rel +
                                   "' is not made of [A-Za-z0-9._-] segments");
        segment.clear();
      } else {
        segment += rel[i];
      }
    }
    if (files.size() == kMaxEditorFiles)
      throw std::runtime_error(where + ": more than " + std::to_string(kMaxEditorFiles) + " files");
    total += entry.file_size(ec);
    if (total > kMaxEditorBytes)
      throw std::runtime_error(where + ": more than " + std::to_string(kMaxEditorBytes >> 20) +
                               " MiB");
    std::ifstream in(entry.path(), std::ios::binary);
    if (!in) throw std::runtime_error(where + ": cannot read " + rel);
    EditorFile f;
    f.name = rel;
    f.content_type = editor_content_type(rel);
    f.body.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    f.immutable = hashed(rel);
    files.push_back(std::move(f));
  }
  if (ec) throw std::runtime_error(where + ": " + ec.message());
  const auto index = std::find_if(files.begin(), files.end(),
                                  [](const auto& f) { return f.name == "index.html"; });
  if (index == files.end())
    throw std::runtime_error(where + ": no index.html; build it with bash scripts/build-editor.sh");
  // web/editor/src/index.html is the build's template: its placeholders name no file.
  if (index->body.find("%APP%") != std::string::npos)
    throw std::runtime_error(where + ": index.html is the unbuilt template (web/editor/src); " +
                             "serve web/editor/dist, built by bash scripts/build-editor.sh");
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return files;
}

}  // namespace kiln::app
