// The one log format of every process (base/include/qkdn/base/log.hpp).
#include "qkdn/base/log.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <string>
#include <vector>

namespace {

using qkdn::base::LogFormat;
using qkdn::base::LogLevel;

// 2026-12-07T07:54:16.123Z as a time point.
std::chrono::system_clock::time_point fixed_time() {
  using namespace std::chrono;
  return sys_days{year{2026} / December / 7} + hours{7} + minutes{54} + seconds{16} +
         milliseconds{123};
}

// Captures lines written through the process-wide logger; restores stderr and the settings.
class Capture {
 public:
  Capture() : saved_(qkdn::base::logging_config()) {
    qkdn::base::set_log_sink([this](std::string_view l) { lines.emplace_back(l); });
  }
  ~Capture() {
    qkdn::base::set_log_sink({});
    qkdn::base::configure_logging(saved_);
  }
  std::vector<std::string> lines;

 private:
  qkdn::base::LogConfig saved_;
};

// A text line is "TIME LEVEL component: message" with an RFC 3339 UTC time in milliseconds.
TEST(BaseLog, TextLineHasTimeLevelComponentMessage) {
  const auto line = qkdn::base::format_log_line(fixed_time(), LogLevel::kWarn, "ck",
                                                "KOG registered", LogFormat::kText, "x");
  EXPECT_EQ(line, "2026-12-07T07:54:16.123Z warn  ck: KOG registered\n");
}

// A JSON line is one object with time, level, process, component and msg; control characters
// and quotes in the message are escaped, so it parses back to the same text.
TEST(BaseLog, JsonLineParsesBackToTheSameFields) {
  const std::string msg = "bad \"frame\"\n\tfrom \x01 peer\\";
  const auto line = qkdn::base::format_log_line(fixed_time(), LogLevel::kError, "store", msg,
                                                LogFormat::kJson, "qkdn-controller");
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one event, one line";
  const auto v = boost::json::parse(line).as_object();
  EXPECT_EQ(v.at("time").as_string(), "2026-12-07T07:54:16.123Z");
  EXPECT_EQ(v.at("level").as_string(), "error");
  EXPECT_EQ(v.at("process").as_string(), "qkdn-controller");
  EXPECT_EQ(v.at("component").as_string(), "store");
  EXPECT_EQ(v.at("msg").as_string(), msg);
}

// Text lines never break in two: line breaks inside a message are escaped.
TEST(BaseLog, TextLineEscapesLineBreaks) {
  const auto line = qkdn::base::format_log_line(fixed_time(), LogLevel::kInfo, "api", "a\nb\rc",
                                                LogFormat::kText, "");
  EXPECT_EQ(line, "2026-12-07T07:54:16.123Z info  api: a\\nb\\rc\n");
}

// The "component: " prefix of existing call sites becomes the component; other lines keep a
// fallback component and their whole text.
TEST(BaseLog, SplitComponentTakesOnlyAWordPrefix) {
  auto s = qkdn::base::split_component("ck: accepted 127.0.0.1:5000", "main");
  EXPECT_EQ(s.component, "ck");
  EXPECT_EQ(s.message, "accepted 127.0.0.1:5000");
  s = qkdn::base::split_component("store: queued writes did not drain", "main");
  EXPECT_EQ(s.component, "store");
  s = qkdn::base::split_component("KM KOG: Ck connection lost", "agent");
  EXPECT_EQ(s.component, "agent") << "capitals and spaces are not a component";
  EXPECT_EQ(s.message, "KM KOG: Ck connection lost");
  s = qkdn::base::split_component("api listening on 127.0.0.1:8080", "main");
  EXPECT_EQ(s.component, "main");
  EXPECT_EQ(s.message, "api listening on 127.0.0.1:8080");
  s = qkdn::base::split_component(": nothing", "main");
  EXPECT_EQ(s.component, "main");
}

// Levels and formats parse from their option spellings only.
TEST(BaseLog, ParsesLevelsAndFormats) {
  EXPECT_EQ(qkdn::base::parse_log_level("debug"), LogLevel::kDebug);
  EXPECT_EQ(qkdn::base::parse_log_level("info"), LogLevel::kInfo);
  EXPECT_EQ(qkdn::base::parse_log_level("warn"), LogLevel::kWarn);
  EXPECT_EQ(qkdn::base::parse_log_level("warning"), LogLevel::kWarn);
  EXPECT_EQ(qkdn::base::parse_log_level("error"), LogLevel::kError);
  EXPECT_FALSE(qkdn::base::parse_log_level("INFO"));
  EXPECT_FALSE(qkdn::base::parse_log_level(""));
  EXPECT_EQ(qkdn::base::parse_log_format("json"), LogFormat::kJson);
  EXPECT_EQ(qkdn::base::parse_log_format("text"), LogFormat::kText);
  EXPECT_FALSE(qkdn::base::parse_log_format("logfmt"));
}

// Lines below the configured level are dropped; the rest use the configured format.
TEST(BaseLog, LevelFiltersAndFormatApplies) {
  Capture cap;
  qkdn::base::configure_logging({LogLevel::kWarn, LogFormat::kText, "t"});
  qkdn::base::log(LogLevel::kDebug, "ck", "dropped");
  qkdn::base::log(LogLevel::kInfo, "ck", "dropped too");
  qkdn::base::log(LogLevel::kWarn, "ck", "kept");
  qkdn::base::log_prefixed(LogLevel::kError, "store: write failed");
  ASSERT_EQ(cap.lines.size(), 2u);
  EXPECT_NE(cap.lines[0].find(" warn  ck: kept\n"), std::string::npos) << cap.lines[0];
  EXPECT_NE(cap.lines[1].find(" error store: write failed\n"), std::string::npos) << cap.lines[1];
  EXPECT_FALSE(qkdn::base::log_enabled(LogLevel::kInfo));

  qkdn::base::configure_logging({LogLevel::kDebug, LogFormat::kJson, "qkdn-agent"});
  EXPECT_TRUE(qkdn::base::log_enabled(LogLevel::kDebug));
  qkdn::base::log(LogLevel::kDebug, "agent", "now JSON");
  ASSERT_EQ(cap.lines.size(), 3u);
  const auto v = boost::json::parse(cap.lines[2]).as_object();
  EXPECT_EQ(v.at("process").as_string(), "qkdn-agent");
  EXPECT_EQ(v.at("level").as_string(), "debug");
  EXPECT_EQ(v.at("msg").as_string(), "now JSON");
}

// A sink that throws does not escape log() (logging never takes a process down).
TEST(BaseLog, ThrowingSinkIsContained) {
  Capture cap;
  qkdn::base::configure_logging({LogLevel::kInfo, LogFormat::kText, ""});
  qkdn::base::set_log_sink([](std::string_view) { throw std::runtime_error("disk full"); });
  EXPECT_NO_THROW(qkdn::base::log(LogLevel::kError, "ck", "x"));
}

}  // namespace
