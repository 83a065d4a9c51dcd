#include "log.hpp"

namespace qkdn::agent {

void log_line(LogLevel level, std::string_view text) { base::log(level, "agent", text); }

}  // namespace qkdn::agent
