// Problem types (RFC 9457): every `type` the API answers with is declared here once, with
// its status; docs/api.md lists them. Handlers refuse with a Refusal (thrown to the top of
// the request, which answers it) or turn a context's error value into one.
#pragma once

#include "assets/errors.hpp"
#include "platform/http.hpp"

#include <string>
#include <string_view>

namespace kiln::api {

inline constexpr std::string_view kProblems = "https://kiln.dev/problems/";

inline http::Response problem(int status, std::string_view type, std::string_view detail) {
  return http::Response::problem(status, std::string(kProblems) + std::string(type),
                                 std::string(http::reason(status)), detail);
}

// A refusal a handler throws to the top of its request; turned into a problem response.
struct Refusal {
  int status;
  std::string type;
  std::string detail;
};

[[noreturn]] inline void refuse(int status, std::string type, std::string detail) {
  throw Refusal{status, std::move(type), std::move(detail)};
}

[[noreturn]] inline void not_found() {
  refuse(404, "not-found", "No such resource, or no access to it.");
}

struct ProblemType {
  int status;
  std::string_view type;
};

// The problem type of each upload and asset refusal.
constexpr ProblemType problem_type(assets::Errc c) {
  using E = assets::Errc;
  switch (c) {
    case E::not_found:
      return {404, "not-found"};
    case E::invalid:
      return {400, "invalid-request"};
    case E::sha256_required:
      return {400, "sha256-required"};
    case E::too_large:
      return {413, "too-large"};
    case E::quota_exceeded:
      return {413, "quota-exceeded"};
    case E::type_not_allowed:
      return {415, "content-type-not-allowed"};
    case E::aborted:
      return {409, "upload-aborted"};
    case E::completed:
      return {409, "upload-completed"};
    case E::not_multipart:
      return {409, "not-multipart"};
    case E::invalid_parts:
      return {400, "invalid-parts"};
    case E::parts_missing:
      return {409, "parts-missing"};
    case E::part_size:
      return {409, "part-size"};
    case E::parts_rejected:
      return {409, "parts-rejected"};
    case E::size_mismatch:
      return {409, "size-mismatch"};
    case E::sha256_mismatch:
      return {409, "sha256-mismatch"};
    case E::not_uploaded:
      return {409, "not-uploaded"};
    case E::duplicate:
      return {409, "duplicate"};
    case E::no_storage:
      return {503, "unavailable"};
    case E::storage_unavailable:
      return {502, "storage-unavailable"};
  }
  return {500, "internal"};
}

[[noreturn]] inline void refuse(const assets::Error& e) {
  const auto t = problem_type(e.code);
  refuse(t.status, std::string(t.type), e.detail);
}

// The value, or the request refused with the error's problem.
template <class T>
T or_refuse(assets::Result<T> r) {
  if (!r) refuse(r.error());
  return std::move(*r);
}

}  // namespace kiln::api
