#include "log.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include "qkdn/controller/clock.hpp"

namespace qkdn::agent {

void log_line(LogLevel level, std::string_view text) {
  static std::mutex mutex;
  static constexpr const char* kNames[] = {"debug", "info", "warn", "error"};
  if (level == LogLevel::kDebug && std::getenv("QKDN_AGENT_DEBUG") == nullptr) return;
  std::string line = format_rfc3339(std::chrono::system_clock::now());
  line += ' ';
  line += kNames[static_cast<int>(level)];
  line += ' ';
  line += text;
  line += '\n';
  std::lock_guard lock(mutex);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace qkdn::agent
