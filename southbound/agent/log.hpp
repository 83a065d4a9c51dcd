// Line-oriented logging for the agent, through the process-wide logger of qkdn/base/log.hpp
// (component "agent"; --log-level and --log-format of the agent set it). Never pass key material.
#pragma once

#include <string_view>

#include "qkdn/base/log.hpp"

namespace qkdn::agent {

using LogLevel = base::LogLevel;

/// Writes one line (thread-safe). Debug lines appear with --log-level debug (or the older
/// QKDN_AGENT_DEBUG=1).
void log_line(LogLevel level, std::string_view text);

}  // namespace qkdn::agent
