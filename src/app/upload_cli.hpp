// `kiln upload FILE --project P`: the command-line uploader. It hashes the file (SHA-256,
// remembered across runs), asks the API for an upload (an asset with the same hash in the
// project ends it at once), sends the bytes straight to object storage over presigned URLs
// (parts in parallel), and completes. Its state (upload id, hash) is kept in a small file
// per (file, project, API), so running the same command again after Ctrl-C, a dropped
// connection or a crash resumes: only the parts the store does not hold are sent.
#pragma once

#include <string>

namespace kiln::app {

struct UploadArgs {
  std::string file;
  std::string project;
  std::string api = "http://127.0.0.1:7700";
  std::string token;         // a user token; --token or KILN_TOKEN
  std::string name;          // the asset's name; default: the file's name
  std::string content_type;  // default: from the extension
  std::string state_dir;     // default: $XDG_STATE_HOME/kiln/uploads or ~/.local/state/...
  int parallel = 4;
  bool progress = true;  // a progress bar on stderr when it is a terminal
  bool events = false;   // one JSON line per part on stdout (for tests and scripts)
};

int run_upload(const UploadArgs& args);

}  // namespace kiln::app
