// Problem types (RFC 9457): every `type` the API answers with is declared here once, with
// its status; docs/api.md lists them. A refusal is a value: handlers and the parsing they
// call return `Checked<T>` (a T or a Refusal), a context's error converts to its Refusal,
// and the top of the request answers it (`answer`). Nothing is thrown.
#pragma once

#include "assets/errors.hpp"
#include "jobs/job.hpp"
#include "platform/http.hpp"

#include <boost/assert/source_location.hpp>

#include <stdexcept>
#include <string>
#include <string_view>

namespace kiln::api {

inline constexpr std::string_view kProblems = "https://kiln.dev/problems/";

inline http::Response problem(int status, std::string_view type, std::string_view detail) {
  return http::Response::problem(status, std::string(kProblems) + std::string(type),
                                 std::string(http::reason(status)), detail);
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

// The problem type of each job queue refusal.
constexpr ProblemType problem_type(jobs::Errc c) {
  using E = jobs::Errc;
  switch (c) {
    case E::not_found:
      return {404, "not-found"};
    case E::invalid:
      return {400, "invalid-request"};
    case E::finished:
      return {409, "job-finished"};
    case E::not_dead:
      return {409, "job-not-dead"};
    case E::conflict:
      return {409, "conflict"};
    case E::lease_lost:  // a worker's call, never an admin's
      return {409, "lease-lost"};
    case E::unavailable:
      return {503, "unavailable"};
  }
  return {500, "internal"};
}

// Why a request is refused: its status, problem type and the sentence a user reads.
struct Refusal {
  Refusal() = default;  // result<T, Refusal>::error() on a value: a 500 nobody answers
  Refusal(int s, std::string t, std::string d)
      : status(s), type(std::move(t)), detail(std::move(d)) {}
  // An upload or asset refusal becomes its problem (implicit: KILN_TRY converts).
  Refusal(const assets::Error& e)  // NOLINT(google-explicit-constructor)
      : status(problem_type(e.code).status), type(problem_type(e.code).type), detail(e.detail) {}
  // A job queue refusal likewise (a database that cannot answer: come back in 2 s).
  Refusal(const jobs::Error& e)  // NOLINT(google-explicit-constructor)
      : status(problem_type(e.code).status),
        type(problem_type(e.code).type),
        detail(e.detail),
        retry_after_s(e.code == jobs::Errc::unavailable ? 2 : 0) {}

  int status = 500;
  std::string type = "internal";
  std::string detail;
  int retry_after_s = 0;  // > 0: Retry-After (429 always says 1)
};

// A T, or the refusal that ends the request.
template <class T>
using Checked = kiln::Result<T, Refusal>;

// What Checked::value() throws on a refusal (found by argument-dependent lookup); the API
// itself never calls value() on one.
[[noreturn]] inline void throw_exception_from_error(const Refusal& r,
                                                    const boost::source_location&) {
  throw std::runtime_error(r.type + ": " + r.detail);
}

inline Refusal not_found() {
  return {404, "not-found", "No such resource, or no access to it."};
}

inline Refusal invalid(std::string detail) {
  return {400, "invalid-request", std::move(detail)};
}

// The problem response of a refusal: 401 says how to authenticate (RFC 9110 section
// 11.6.1), 429 when to come back.
inline http::Response answer(const Refusal& r) {
  auto resp = problem(r.status, r.type, r.detail);
  if (r.status == 401) resp.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"kiln\"");
  if (r.status == 429 || r.retry_after_s > 0)
    resp.headers.emplace_back("Retry-After",
                              std::to_string(r.retry_after_s > 0 ? r.retry_after_s : 1));
  return resp;
}

}  // namespace kiln::api
