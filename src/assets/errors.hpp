// What an upload or asset operation refuses, as a value (platform/result.hpp). The API turns
// each code into its problem type and status (api/problem.hpp, docs/api.md); `detail` is the
// sentence a user reads.
#pragma once

#include "platform/result.hpp"

#include <string>

namespace kiln::assets {

enum class Errc {
  not_found,            // no such upload or asset, or not the caller's
  invalid,              // a field out of its shape or range
  sha256_required,      // a single-PUT upload without its checksum
  too_large,            // past uploads.max_size
  quota_exceeded,       // past the project's quota
  type_not_allowed,     // a media type (declared or detected) not in uploads.content_types
  aborted,              // the upload was aborted
  completed,            // the upload is complete already
  not_multipart,        // a part asked of a single-PUT upload
  invalid_parts,        // a completion's part list out of order or repeated
  parts_missing,        // parts not held by the store (or not with that ETag)
  part_size,            // a part of the wrong size
  parts_rejected,       // the store refused the parts at completion
  size_mismatch,        // the object's size is not the declared one
  sha256_mismatch,      // the object's SHA-256 is not the declared one
  not_uploaded,         // the store holds no bytes for the upload (yet, or any more)
  duplicate,            // the content exists as an asset (where no "already there" answer fits)
  no_storage,           // no object storage is configured
  storage_unavailable,  // the object storage failed or did not answer
};

using Error = ErrorOf<Errc>;

template <class T>
using Result = kiln::Result<T, Error>;

}  // namespace kiln::assets
