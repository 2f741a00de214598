// Resumable uploads to Kiln (docs/uploads.md), for `kiln upload` now and the build agent
// later: hash the file (SHA-256, remembered across runs), ask the API for an upload (an
// asset with the same hash in the project ends it at once), send the bytes straight to
// object storage over presigned URLs (parts in parallel, a part whose URL expired signed
// again once), and complete. The upload id and hash are kept in a small state file per
// (file, project, API): running again after an interruption, a dropped connection or a crash
// resumes, and only the parts the store does not hold are sent.
//
// Blocking; `parallel` threads send parts. Failures throw client::Failure with the message
// a user reads.
#pragma once

#include "client/api_client.hpp"

#include <boost/json/value.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kiln::client {

struct UploadJob {
  std::string file;
  std::string project;
  std::string api = "http://127.0.0.1:7700";  // the API's base URL
  std::string token;                          // a user token
  std::string name;                           // the asset's name; "": the file's name
  std::string content_type;                   // "": from the extension (guess_type)
  std::filesystem::path state_dir;            // where resumable state is kept
  int parallel = 4;                           // parts in flight
};

// What the uploader tells as it goes. Called from its threads (parts from several at once).
class UploadListener {
 public:
  virtual ~UploadListener() = default;
  virtual void hashing(std::uint64_t done, std::uint64_t total) { (void)done, (void)total; }
  // A multipart upload begins (or resumes): `to_send` are the part numbers still missing.
  virtual void upload(const std::string& id, bool resumed, std::uint64_t parts,
                      const std::vector<std::uint64_t>& to_send) {
    (void)id, (void)resumed, (void)parts, (void)to_send;
  }
  // Bytes the store holds already when sending starts (a resumed multipart upload).
  virtual void held(std::uint64_t bytes) { (void)bytes; }
  // Bytes sent, as they go (a single PUT, or each part of a multipart upload).
  virtual void sent(std::uint64_t bytes) { (void)bytes; }
  virtual void part_started(std::uint64_t number) { (void)number; }
  virtual void part_sent(std::uint64_t number, std::uint64_t bytes, const std::string& etag) {
    (void)number, (void)bytes, (void)etag;
  }
  // A sentence for the user (resuming, already there).
  virtual void note(const std::string& text) { (void)text; }
  // Checked between parts: true stops the upload (it stays resumable).
  virtual bool stopping() { return false; }
};

struct UploadOutcome {
  enum class How { Completed, Deduplicated, Interrupted } how = How::Completed;
  boost::json::value asset;  // the asset (null when interrupted)
  std::string upload;        // the upload id ("" when deduplicated at once)
  bool resumed = false;
  bool completed_before = false;  // a previous run had completed it: nothing to do
  std::uint64_t parts_sent = 0;
  std::uint64_t bytes_sent = 0;
};

UploadOutcome upload_file(const UploadJob& job, UploadListener& listener);

// The media type a file name's extension suggests (application/octet-stream if none).
std::string guess_type(const std::filesystem::path& p);

// Where resumable state goes by default: $XDG_STATE_HOME/kiln/uploads, else
// ~/.local/state/kiln/uploads, else the temp directory.
std::filesystem::path default_state_dir();

}  // namespace kiln::client
