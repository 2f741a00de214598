// Expected failures as values: `Result<T, E>` is boost::system::result (Boost.System 1.79+),
// holding a T or an E. Each context declares its E: an error enum and a human-readable
// detail (assets/errors.hpp, ...). Exceptions are for the unexpected (a bug, a database or
// network outage that no caller can handle but the top of a request or task) and for
// start-up.
//
//   Result<Upload, assets::Error> r = service.find(...);
//   if (!r) return problem_of(r.error());
//   use(*r);
//
// Or, in a function that returns a Result whose error the callee's converts to:
//   KILN_TRY(upload, service.find(...));   // `upload` is the value, or the error is returned
//   KILN_CHECK(service.abort(...));        // the error is returned; no value is kept
#pragma once

#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>

#include <stdexcept>
#include <string>
#include <utility>

namespace kiln {

template <class T, class E>
using Result = boost::system::result<T, E>;

// A context's error: its code (the context's enum) and the sentence a user reads.
//   namespace assets { using Error = ErrorOf<Errc>; }
template <class Code>
struct ErrorOf {
  Code code;
  std::string detail;
};

// What Result::value() throws on an ErrorOf (found by argument-dependent lookup); callers
// test the result instead.
template <class Code>
[[noreturn]] void throw_exception_from_error(const ErrorOf<Code>& e,
                                             const boost::source_location&) {
  throw std::runtime_error(e.detail);
}

}  // namespace kiln

#define KILN_RESULT_CONCAT2(a, b) a##b
#define KILN_RESULT_CONCAT(a, b) KILN_RESULT_CONCAT2(a, b)
#define KILN_TRY_IMPL(var, tmp, ...)       \
  auto tmp = (__VA_ARGS__);                \
  if (!tmp) return std::move(tmp).error(); \
  auto var = std::move(*tmp)
// `var` = the value of the Result `...`, or its error returned from the enclosing function.
#define KILN_TRY(var, ...) KILN_TRY_IMPL(var, KILN_RESULT_CONCAT(kiln_try_, __LINE__), __VA_ARGS__)
// The error of the Result `...` returned from the enclosing function; its value dropped.
#define KILN_CHECK(...) \
  if (auto kiln_check_ = (__VA_ARGS__); !kiln_check_) return std::move(kiln_check_).error()
