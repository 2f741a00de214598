// `kiln download ASSET --project P`: saves an asset of a project to a file named as the
// asset (or -o FILE). The API gives a presigned URL; the bytes come straight from object
// storage into a new file of its own beside the target (mkstemp: never a link or file placed
// there by someone else), are checked against the asset's SHA-256
// when it has one, and only then take the target's name (an interrupted download leaves
// no half file under it). An existing file is not replaced without --force.
#pragma once

#include <string>

namespace kiln::app {

struct DownloadArgs {
  std::string asset;
  std::string project;
  std::string api = "http://127.0.0.1:7700";
  std::string token;   // --token or KILN_TOKEN
  std::string output;  // default: the asset's name, in the current directory
  bool force = false;
};

// 0 when saved; 1 with a message on stderr otherwise.
int run_download(const DownloadArgs& args);

}  // namespace kiln::app
