#include "assets/upload.hpp"

#include "platform/utf8.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>

namespace kiln::assets {

bool valid_filename(std::string_view s) {
  if (s.empty() || s.size() > 255 || s == "." || s == "..") return false;
  return utf8::printable_length(s) && s.find_first_of("/\\") == std::string_view::npos;
}

bool valid_sha256(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

bool valid_media_type(std::string_view s) {
  const auto slash = s.find('/');
  auto token = [](std::string_view t) {
    return !t.empty() && t.size() <= 127 && std::all_of(t.begin(), t.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) ||
             std::string_view("!#$&-^_.+").find(c) != std::string_view::npos;
    });
  };
  return slash != std::string_view::npos && token(s.substr(0, slash)) && token(s.substr(slash + 1));
}

bool type_allowed(const std::vector<std::string>& allowed, std::string_view type) {
  return std::any_of(allowed.begin(), allowed.end(), [&](const std::string& a) {
    if (a == "*/*" || a == type) return true;
    return a.ends_with("/*") && type.starts_with(std::string_view(a).substr(0, a.size() - 1));
  });
}

std::string mib(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

Result<UploadPlan> plan_upload(NewUpload n, const std::string& id, const std::string& project,
                               const std::string& user, std::int64_t now_ms,
                               const UploadPolicy& policy) {
  // Media types are case-insensitive (RFC 6838 §4.2): kept and compared in lowercase.
  for (auto& ch : n.content_type)
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (!valid_filename(n.filename))
    return Error{Errc::invalid,
                 "'filename' must be 1-255 bytes of UTF-8 without control characters, "
                 "bidirectional formatting characters, '/' or '\\', and not '.' or '..'."};
  if (!valid_media_type(n.content_type))
    return Error{Errc::invalid, "'content_type' must be a media type such as image/png."};
  if (!type_allowed(policy.content_types, n.content_type))
    return Error{Errc::type_not_allowed, "Files of type " + n.content_type +
                                             " are not accepted here (uploads.content_types)."};
  if (!n.sha256.empty() && !valid_sha256(n.sha256))
    return Error{Errc::invalid, "'sha256' must be 64 lowercase hex digits."};
  if (n.size > policy.max_size)
    return Error{Errc::too_large, "The file has " + mib(n.size) + "; at most " +
                                      mib(policy.max_size) + " per file."};
  UploadPlan plan;
  plan.multipart = n.force_multipart || n.size > policy.multipart_threshold;
  // A presigned PUT stays valid until it expires, also after completion: without a signed
  // checksum it could replace an asset's bytes (with an executable, or more than the quota).
  if (!plan.multipart && n.sha256.empty())
    return Error{Errc::sha256_required,
                 "A file of at most " + std::to_string(policy.multipart_threshold) +
                     " bytes goes up in one PUT, which needs its 'sha256' (64 lowercase hex "
                     "digits; in a browser: crypto.subtle.digest('SHA-256', bytes)) so that the "
                     "store accepts exactly these bytes."};
  auto& u = plan.upload;
  u.id = id;
  u.project = project;
  u.user = user;
  u.filename = std::move(n.filename);
  u.size = n.size;
  u.content_type = std::move(n.content_type);
  u.sha256 = std::move(n.sha256);
  u.key = !plan.multipart ? "projects/" + project + "/sha256/" + u.sha256
                          : "projects/" + project + "/uploads/" + id;
  if (plan.multipart && !n.force_multipart) {
    std::uint64_t ps = std::max(policy.part_size, kMinPartBytes);
    const auto need = (n.size + kMaxParts - 1) / kMaxParts;
    if (ps < need) ps = (need + (1 << 20) - 1) / (1 << 20) * (1 << 20);
    u.part_size = ps;
  }
  u.state = store::UploadState::Open;
  u.created_at = u.updated_at = now_ms;
  return plan;
}

std::uint64_t part_count(const store::Upload& u) {
  if (!u.multipart() || u.part_size == 0) return 0;
  return std::max<std::uint64_t>(1, (u.size + u.part_size - 1) / u.part_size);
}

std::uint64_t part_bytes(const store::Upload& u, std::uint64_t n) {
  const auto count = part_count(u);
  return n < count ? u.part_size : u.size - u.part_size * (count - 1);
}

Result<std::vector<s3::Part>> parts_to_complete(
    const store::Upload& u, const std::vector<s3::Part>& held,
    const std::vector<std::pair<int, std::string>>& client_parts) {
  std::map<int, s3::Part> by_number;
  for (const auto& p : held) by_number[p.number] = p;
  std::vector<s3::Part> parts;
  if (!client_parts.empty()) {
    auto unquoted = [](std::string e) {
      std::erase(e, '"');
      return e;
    };
    // The list's shape first: a list out of order is invalid whatever the store holds.
    int prev = 0;
    for (const auto& [n, etag] : client_parts) {
      if (n <= prev)
        return Error{Errc::invalid_parts, "List parts once each, in ascending order of number."};
      prev = n;
    }
    for (const auto& [n, etag] : client_parts) {
      auto it = by_number.find(n);
      if (it == by_number.end() || unquoted(it->second.etag) != unquoted(etag))
        return Error{Errc::parts_missing,
                     "Part " + std::to_string(n) +
                         " is not held by the store with that ETag; upload it (again) and retry."};
      parts.push_back(it->second);
    }
  } else {
    for (const auto& [n, p] : by_number) parts.push_back(p);
  }
  // Parts 1..N, no gaps; fixed sizes when the API chose the part size.
  const auto fixed = part_count(u);
  const std::uint64_t want = fixed > 0 ? fixed : parts.size();
  std::vector<std::string> missing;
  std::uint64_t total = 0;
  for (std::uint64_t n = 1; n <= want; ++n) {
    auto it = by_number.find(static_cast<int>(n));
    const bool listed = std::any_of(parts.begin(), parts.end(), [&](const s3::Part& p) {
      return p.number == static_cast<int>(n);
    });
    if (it == by_number.end() || !listed) {
      if (missing.size() < 20) missing.push_back(std::to_string(n));
      continue;
    }
    if (fixed > 0 && it->second.size != part_bytes(u, n))
      return Error{Errc::part_size,
                   "Part " + std::to_string(n) + " has " + std::to_string(it->second.size) +
                       " bytes; this upload's parts are " + std::to_string(part_bytes(u, n)) +
                       " bytes. Upload it again."};
    total += it->second.size;
  }
  if (!missing.empty() || parts.size() != want) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    return Error{Errc::parts_missing, missing.empty()
                                          ? std::string("Parts beyond the last one were uploaded.")
                                          : "Parts not uploaded yet: " + list + "."};
  }
  if (total != u.size) {
    // Uppy-shaped uploads choose their own part size: the total is what counts.
    return Error{Errc::size_mismatch, "The parts hold " + std::to_string(total) +
                                          " bytes; the upload declared " + std::to_string(u.size) +
                                          ". Upload the missing or wrong parts again."};
  }
  return parts;
}

Result<void> need_open(const store::Upload& u) {
  if (u.state == store::UploadState::Completed)
    return Error{Errc::completed, "This upload is completed."};
  if (u.state == store::UploadState::Aborted)
    return Error{Errc::aborted, "This upload is aborted."};
  return {};
}

}  // namespace kiln::assets
