// Every setting Kiln understands, with its default, limits and meaning. The README's
// configuration reference is generated from this table (`kiln config doc`) and a test
// checks that the two agree.
#pragma once

#include "platform/config.hpp"

namespace kiln::app {

const config::Schema& schema();

}  // namespace kiln::app
