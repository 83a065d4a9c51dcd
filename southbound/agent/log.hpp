// Line-oriented logging to stderr for the agent. Never pass key material.
#pragma once

#include <string_view>

namespace qkdn::agent {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

/// Writes one timestamped line to stderr (thread-safe).
void log_line(LogLevel level, std::string_view text);

}  // namespace qkdn::agent
