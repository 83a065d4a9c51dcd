// Version and source revision of this build. Defined in a source file generated at configure
// time (controller/core/build_info.cpp.in), so that a new revision recompiles one file and every
// other translation unit keeps its ccache entry.
#pragma once

namespace qkdn {

/// The project version (CMake PROJECT_VERSION), e.g. "0.1.0".
const char* build_version();
/// `git rev-parse --short HEAD` at configure time, or "unknown".
const char* build_revision();

}  // namespace qkdn
