// The upload lifecycle's rules, without I/O: what a new upload may be and how it goes up
// (one presigned PUT, or a multipart upload and its part size), and which parts complete
// it. The service (service.hpp) applies them to the database and the object store.
//
// Shapes follow S3 (Amazon S3 API reference: CreateMultipartUpload, UploadPart,
// CompleteMultipartUpload): parts numbered 1-10,000, every part but the last at least
// 5 MiB.
#pragma once

#include "assets/errors.hpp"
#include "clients/s3/client.hpp"
#include "store/uploads.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::assets {

inline constexpr std::uint64_t kMinPartBytes = 5ULL << 20;  // S3: every part but the last
inline constexpr std::uint64_t kMaxParts = 10'000;

// The settings the rules read (uploads.* in docs/configuration.md).
struct UploadPolicy {
  std::uint64_t multipart_threshold = 100ULL << 20;  // bytes; larger files go multipart
  std::uint64_t part_size = 16ULL << 20;             // at least 5 MiB; grown so parts <= 10,000
  std::uint64_t max_size = 64ULL << 30;              // bytes per file
  std::vector<std::string> content_types;            // allowed; "type/*" matches a family
};

struct NewUpload {
  std::string filename;
  std::string content_type;
  std::string sha256;  // "" when not declared
  std::uint64_t size = 0;
  bool force_multipart = false;  // Uppy's multipart routes
};

// A checked new upload: the row to record (state open, no multipart id yet) and how it
// goes up.
struct UploadPlan {
  store::Upload upload;
  bool multipart = false;
};

// Checks `n` against the policy and plans it. A single PUT gets a content-addressed key
// (projects/P/sha256/HEX: the store checks the signed checksum, so the key can only ever
// hold these bytes) and needs a SHA-256; a multipart upload gets a key of its own
// (projects/P/uploads/ID) and, unless Uppy chooses its own, a fixed part size.
// Errors: invalid, type_not_allowed, sha256_required, too_large.
Result<UploadPlan> plan_upload(NewUpload n, const std::string& id, const std::string& project,
                               const std::string& user, std::int64_t now_ms,
                               const UploadPolicy& policy);

// How many parts a multipart upload with a fixed part size has; 0 when not fixed.
std::uint64_t part_count(const store::Upload& u);
// The size of part `n` (1-based) of such an upload.
std::uint64_t part_bytes(const store::Upload& u, std::uint64_t n);

// The parts that complete a multipart upload: `client_parts` (number -> ETag, what the
// client says it sent; empty: every part the store holds) checked against `held` (the
// store's ListParts): ascending, each held with that ETag, 1..N without gaps, each of its
// fixed size, `u.size` bytes in all.
// Errors: invalid_parts, parts_missing, part_size, size_mismatch.
Result<std::vector<s3::Part>> parts_to_complete(
    const store::Upload& u, const std::vector<s3::Part>& held,
    const std::vector<std::pair<int, std::string>>& client_parts);

// An error unless the upload is open (aborted, completed).
Result<void> need_open(const store::Upload& u);

// A file name as the user sees it: 1-255 bytes of valid UTF-8, no control characters
// (C0, DEL, C1), no path separators, not "." or "..", no bidirectional formatting
// characters (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069: "\u202etxt.exe" reads
// "exe.txt"). It names the asset; it never becomes an object key or a path.
bool valid_filename(std::string_view s);
// 64 lowercase hex digits.
bool valid_sha256(std::string_view s);
// type/subtype of RFC 6838 restricted-name characters; parameters are not accepted.
bool valid_media_type(std::string_view s);
// Whether `type` is in the allow-list ("*/*", an exact type, or a "family/*").
bool type_allowed(const std::vector<std::string>& allowed, std::string_view type);

// "12.3 MiB", for messages.
std::string mib(std::uint64_t bytes);

}  // namespace kiln::assets
