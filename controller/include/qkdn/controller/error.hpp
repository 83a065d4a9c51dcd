// The project's one error type lives in base/ (qkdn/base/error.hpp) so that every library, the
// shared network pieces included, throws and maps the same errors. This header keeps the core's
// include path working.
#pragma once

#include "qkdn/base/error.hpp"
