// One log format for every process of the project (controller, agent, and the libraries they
// run): one line per event on stderr with an RFC 3339 UTC time, a level, a component and a
// message, either as text
//
//   2026-12-07T07:54:16.123Z info  ck: KOG registered from 127.0.0.1:40312
//
// or as JSON lines (one object per line, for log shippers)
//
//   {"time":"2026-12-07T07:54:16.123Z","level":"info","process":"qkdn-controller",
//    "component":"ck","msg":"KOG registered from 127.0.0.1:40312"}
//
// The logger is process-wide (configured once by main) and thread-safe: each line is formatted
// first and written with one call under a mutex, so lines of different threads never interleave.
// Never pass key material.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace qkdn::base {

/// Severity of a log line, least severe first. Lines below the configured level are dropped.
enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

/// Text lines (human) or JSON lines (machines).
enum class LogFormat { kText, kJson };

/// "debug" | "info" | "warn" | "error".
std::string_view to_string(LogLevel level) noexcept;
/// Parses "debug", "info", "warn" (or "warning"), "error"; nullopt for anything else.
std::optional<LogLevel> parse_log_level(std::string_view text) noexcept;
/// Parses "text" or "json"; nullopt for anything else.
std::optional<LogFormat> parse_log_format(std::string_view text) noexcept;

/// The process-wide settings. `process` names the program in JSON lines (e.g. "qkdn-agent").
struct LogConfig {
  LogLevel level = LogLevel::kInfo;
  LogFormat format = LogFormat::kText;
  std::string process;
};

/// Replaces the process-wide settings (call from main before threads log; safe at any time).
void configure_logging(LogConfig config);
/// The current settings.
[[nodiscard]] LogConfig logging_config();
/// True when a line of `level` would be written (use it to skip building expensive messages).
[[nodiscard]] bool log_enabled(LogLevel level) noexcept;

/// Writes one line: `component` says which part of the program speaks ("ck", "store", "api",
/// "http", "agent", ...), `message` is free text (newlines are escaped so one event stays one
/// line). Thread-safe; never throws.
void log(LogLevel level, std::string_view component, std::string_view message) noexcept;

/// Writes `line` split by split_component() (a leading "component: " prefix) at `level`: the
/// bridge for call sites that already write "ck: ..." or "store: ..." lines.
void log_prefixed(LogLevel level, std::string_view line) noexcept;

/// A line's component and message: "ck: accepted x" -> {"ck", "accepted x"}. The component is a
/// leading word of lower-case letters, digits, '-' or '_' (at most 24 characters) followed by
/// ": "; without one the component is `fallback` and the message the whole line.
struct ComponentAndMessage {
  std::string_view component;
  std::string_view message;
};
[[nodiscard]] ComponentAndMessage split_component(std::string_view line,
                                                  std::string_view fallback) noexcept;

/// Formats one line (with its trailing '\n') without writing it. Pure: the time is given.
[[nodiscard]] std::string format_log_line(std::chrono::system_clock::time_point time,
                                          LogLevel level, std::string_view component,
                                          std::string_view message, LogFormat format,
                                          std::string_view process);

/// RFC 3339 UTC with milliseconds, e.g. "2026-12-07T07:54:16.123Z".
[[nodiscard]] std::string format_rfc3339_ms(std::chrono::system_clock::time_point time);

/// Replaces where lines go (default: stderr); an empty function restores stderr. For tests.
void set_log_sink(std::function<void(std::string_view line)> sink);

}  // namespace qkdn::base
