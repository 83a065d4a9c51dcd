#include "qkdn/base/log.hpp"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace qkdn::base {

namespace {

struct Logger {
  std::mutex mu;  // guards config and sink, and keeps whole lines together on stderr
  LogConfig config;
  std::function<void(std::string_view)> sink;
  std::atomic<int> level{static_cast<int>(LogLevel::kInfo)};  // read without the mutex
};

Logger& logger() {
  // Never destroyed: threads may still log while static destructors run at exit.
  static auto* l = new Logger;
  return *l;
}

// JSON string escaping (RFC 8259): quotes, backslash and control characters.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

// Text lines: one event per line, so embedded line breaks are shown escaped.
void append_text(std::string& out, std::string_view s) {
  for (char ch : s) {
    if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\r') {
      out += "\\r";
    } else {
      out += ch;
    }
  }
}

bool component_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

}  // namespace

std::string_view to_string(LogLevel level) noexcept {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

std::optional<LogLevel> parse_log_level(std::string_view text) noexcept {
  if (text == "debug") return LogLevel::kDebug;
  if (text == "info") return LogLevel::kInfo;
  if (text == "warn" || text == "warning") return LogLevel::kWarn;
  if (text == "error") return LogLevel::kError;
  return std::nullopt;
}

std::optional<LogFormat> parse_log_format(std::string_view text) noexcept {
  if (text == "text") return LogFormat::kText;
  if (text == "json") return LogFormat::kJson;
  return std::nullopt;
}

void configure_logging(LogConfig config) {
  auto& l = logger();
  std::lock_guard lock(l.mu);
  l.level.store(static_cast<int>(config.level));
  l.config = std::move(config);
}

LogConfig logging_config() {
  auto& l = logger();
  std::lock_guard lock(l.mu);
  return l.config;
}

bool log_enabled(LogLevel level) noexcept {
  return static_cast<int>(level) >= logger().level.load(std::memory_order_relaxed);
}

std::string format_rfc3339_ms(std::chrono::system_clock::time_point time) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(time);
  const auto secs = floor<seconds>(ms);
  const auto millis = (ms - secs).count();
  const std::time_t t = system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  const int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                              tm.tm_sec, static_cast<int>(millis));
  return std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
}

ComponentAndMessage split_component(std::string_view line, std::string_view fallback) noexcept {
  const auto colon = line.find(": ");
  if (colon == std::string_view::npos || colon == 0 || colon > 24) return {fallback, line};
  for (std::size_t i = 0; i < colon; ++i) {
    if (!component_char(line[i])) return {fallback, line};
  }
  return {line.substr(0, colon), line.substr(colon + 2)};
}

std::string format_log_line(std::chrono::system_clock::time_point time, LogLevel level,
                            std::string_view component, std::string_view message, LogFormat format,
                            std::string_view process) {
  std::string out;
  out.reserve(64 + component.size() + message.size());
  if (format == LogFormat::kJson) {
    out += "{\"time\":\"";
    out += format_rfc3339_ms(time);
    out += "\",\"level\":\"";
    out += to_string(level);
    out += '"';
    if (!process.empty()) {
      out += ",\"process\":";
      append_json_string(out, process);
    }
    out += ",\"component\":";
    append_json_string(out, component);
    out += ",\"msg\":";
    append_json_string(out, message);
    out += "}\n";
    return out;
  }
  out += format_rfc3339_ms(time);
  out += ' ';
  const auto name = to_string(level);
  out += name;
  out.append(6 - name.size(), ' ');  // levels line up: "info  ", "error "
  append_text(out, component);
  out += ": ";
  append_text(out, message);
  out += '\n';
  return out;
}

void log(LogLevel level, std::string_view component, std::string_view message) noexcept {
  if (!log_enabled(level)) return;
  try {
    auto& l = logger();
    const auto now = std::chrono::system_clock::now();
    std::lock_guard lock(l.mu);
    const auto line =
        format_log_line(now, level, component, message, l.config.format, l.config.process);
    if (l.sink) {
      l.sink(line);
    } else {
      std::fwrite(line.data(), 1, line.size(), stderr);
    }
  } catch (...) {
    // Logging must never take the process down (out of memory, a throwing test sink).
  }
}

void log_prefixed(LogLevel level, std::string_view line) noexcept {
  const auto [component, message] = split_component(line, "main");
  log(level, component, message);
}

void set_log_sink(std::function<void(std::string_view line)> sink) {
  auto& l = logger();
  std::lock_guard lock(l.mu);
  l.sink = std::move(sink);
}

}  // namespace qkdn::base
