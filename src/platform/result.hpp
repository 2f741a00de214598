// Expected failures as values: `Result<T, E>` is boost::system::result (Boost.System 1.79+),
// holding a T or an E. Each context declares its E: an error enum and a human-readable
// detail (assets/errors.hpp, ...). Exceptions are for the unexpected (a bug, a database or
// network outage that no caller can handle but the top of a request or task) and for
// start-up.
//
//   Result<Upload, assets::Error> r = service.find(...);
//   if (!r) return problem_of(r.error());
//   use(*r);
#pragma once

#include <boost/system/result.hpp>

namespace kiln {

template <class T, class E>
using Result = boost::system::result<T, E>;

}  // namespace kiln
