// The shared command-line parser (qkdn/base/args.hpp): every source of options, every refusal.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "qkdn/base/args.hpp"
#include "qkdn/base/error.hpp"

namespace {

using qkdn::InvalidArgument;
using qkdn::base::ArgParser;

struct Settings {
  std::string topology;
  std::vector<std::string> kms;
  bool insecure = false;
  std::int64_t threads = 2;
  std::vector<std::string> words;
};

ArgParser make_parser(Settings& s) {
  ArgParser p("prog");
  p.section("Network")
      .option("topology", "FILE", "topology document", [&](std::string_view v) { s.topology = v; })
      .option("km", "ID", "host this KM (repeatable)",
              [&](std::string_view v) { s.kms.emplace_back(v); })
      .section("Other")
      .flag("insecure", "plain TCP", [&](bool on) { s.insecure = on; })
      .option("threads", "N", "io threads",
              [&](std::string_view v) { s.threads = qkdn::base::parse_int("--threads", v, 1, 64); })
      .env("threads", "QKDN_ARGS_TEST_THREADS")
      .config_file();
  return p;
}

std::string message_of(ArgParser& p, const std::vector<std::string>& args) {
  try {
    p.parse(args);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "(accepted)";
}

// Both spellings of a value, repeatable options, switches with and without a value.
TEST(ArgParser, ValuesSwitchesAndRepeats) {
  Settings s;
  auto p = make_parser(s);
  EXPECT_EQ(p.parse({"--topology", "a.json", "--km=K1", "--km", "K2", "--insecure", "--threads=4"}),
            ArgParser::Result::kRun);
  EXPECT_EQ(s.topology, "a.json");
  EXPECT_EQ(s.kms, (std::vector<std::string>{"K1", "K2"}));
  EXPECT_TRUE(s.insecure);
  EXPECT_EQ(s.threads, 4);
  Settings t;
  auto q = make_parser(t);
  q.parse({"--insecure", "--insecure=false"});
  EXPECT_FALSE(t.insecure);
}

// --help and --version are answered even after a broken option; nothing is applied.
TEST(ArgParser, HelpAndVersionWin) {
  Settings s;
  auto p = make_parser(s);
  EXPECT_EQ(p.parse({"--bogus", "--help"}), ArgParser::Result::kHelp);
  EXPECT_EQ(p.parse({"--topology", "x", "--version"}), ArgParser::Result::kVersion);
  EXPECT_EQ(p.parse({"-h"}), ArgParser::Result::kHelp);
  EXPECT_TRUE(s.topology.empty());
}

// Every refusal names the option and says what was expected.
TEST(ArgParser, RefusalsAreClear) {
  Settings s;
  auto p = make_parser(s);
  EXPECT_EQ(message_of(p, {"--topolgy", "x"}),
            "unknown option '--topolgy' (did you mean --topology?) (see --help)");
  EXPECT_EQ(message_of(p, {"--zzzzzzzz"}), "unknown option '--zzzzzzzz' (see --help)");
  EXPECT_EQ(message_of(p, {"--topology"}), "--topology: missing value (FILE)");
  EXPECT_EQ(message_of(p, {"--threads", "0"}),
            "--threads: expected an integer in [1, 64], got '0'");
  EXPECT_EQ(message_of(p, {"--insecure=maybe"}), "--insecure: expected true or false, got 'maybe'");
  EXPECT_EQ(message_of(p, {"stray"}), "unexpected argument 'stray' (see --help)");
  EXPECT_EQ(message_of(p, {"-x"}), "unknown option '-x' (see --help)");
}

// Config file < environment < command line; config errors carry file:line.
TEST(ArgParser, ConfigEnvironmentCommandLine) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("qkdn-args-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto conf = (dir / "a.conf").string();
  std::ofstream(conf) << "# comment\ntopology = from-file.json\nthreads = 3\ninsecure\n";
  {
    Settings s;
    auto p = make_parser(s);
    ::unsetenv("QKDN_ARGS_TEST_THREADS");
    p.parse({"--config", conf});
    EXPECT_EQ(s.topology, "from-file.json");
    EXPECT_EQ(s.threads, 3);
    EXPECT_TRUE(s.insecure);
  }
  {
    Settings s;
    auto p = make_parser(s);
    ::setenv("QKDN_ARGS_TEST_THREADS", "5", 1);
    p.parse({"--config", conf});
    EXPECT_EQ(s.threads, 5);  // environment over file
    p.parse({"--config", conf, "--threads", "7"});
    EXPECT_EQ(s.threads, 7);  // command line over environment
    ::setenv("QKDN_ARGS_TEST_THREADS", "99", 1);
    EXPECT_EQ(message_of(p, {}),
              "QKDN_ARGS_TEST_THREADS: --threads: expected an integer in [1, 64], got '99'");
    ::unsetenv("QKDN_ARGS_TEST_THREADS");
  }
  std::ofstream(dir / "bad.conf") << "topology = x\ntopolgy = y\n";
  Settings s;
  auto p = make_parser(s);
  EXPECT_EQ(
      message_of(p, {"--config", (dir / "bad.conf").string()}),
      (dir / "bad.conf").string() + ":2: unknown option '--topolgy' (did you mean --topology?)");
  std::ofstream(dir / "help.conf") << "help = true\n";
  EXPECT_EQ(message_of(p, {"--config", (dir / "help.conf").string()}),
            (dir / "help.conf").string() + ":1: 'help' is not allowed in a config file");
  EXPECT_EQ(message_of(p, {"--config", (dir / "missing.conf").string()}),
            "--config: cannot read '" + (dir / "missing.conf").string() + "'");
  std::filesystem::remove_all(dir);
}

// Positional words, and `--` ending the options.
TEST(ArgParser, Positionals) {
  Settings s;
  auto p = make_parser(s);
  p.positionals([&](std::string_view w) { s.words.emplace_back(w); });
  p.parse({"link", "--insecure", "list", "--", "--not-an-option"});
  EXPECT_EQ(s.words, (std::vector<std::string>{"link", "list", "--not-an-option"}));
  EXPECT_TRUE(s.insecure);
}

// The generated help lists every option under its section, with metavars and environment.
TEST(ArgParser, HelpText) {
  Settings s;
  auto p = make_parser(s);
  const auto h = p.help();
  EXPECT_NE(h.find("Network:\n  --topology FILE         topology document\n"), std::string::npos)
      << h;
  EXPECT_NE(h.find("Other:\n  --insecure "), std::string::npos) << h;
  EXPECT_NE(h.find("io threads (environment: QKDN_ARGS_TEST_THREADS)"), std::string::npos) << h;
  EXPECT_NE(h.find("  --config FILE"), std::string::npos) << h;
  EXPECT_NE(h.find("  --help"), std::string::npos) << h;
}

// Short and long aliases reach their option; help lists them beside it; a short option without
// an alias is refused.
TEST(ArgParser, Aliases) {
  std::string output;
  std::string ca;
  ArgParser p("prog");
  p.option("output", "FMT", "table or json", [&](std::string_view v) { output = v; })
      .alias("-o", "output")
      .option("cacert", "FILE", "CA bundle", [&](std::string_view v) { ca = v; })
      .alias("--ca", "cacert");
  p.parse({"-o", "json", "--ca=ca.pem"});
  EXPECT_EQ(output, "json");
  EXPECT_EQ(ca, "ca.pem");
  p.parse({"--output", "table", "--cacert", "b.pem"});
  EXPECT_EQ(output, "table");
  EXPECT_EQ(ca, "b.pem");
  EXPECT_EQ(message_of(p, {"-o"}), "-o: missing value (FMT)");
  EXPECT_EQ(message_of(p, {"-x", "1"}), "unknown option '-x' (see --help)");
  const auto h = p.help();
  EXPECT_NE(h.find("  -o, --output FMT        table or json\n"), std::string::npos) << h;
  EXPECT_NE(h.find("  --cacert, --ca FILE     CA bundle\n"), std::string::npos) << h;
  EXPECT_THROW(p.alias("-o", "cacert"), qkdn::Internal);        // taken
  EXPECT_THROW(p.alias("-ab", "cacert"), qkdn::Internal);       // not one letter
  EXPECT_THROW(p.alias("--output", "cacert"), qkdn::Internal);  // an option's own name
  EXPECT_THROW(p.alias("-c", "nothing"), qkdn::Internal);       // undeclared option
}

// parse_known takes its own options anywhere on the line and hands back the rest in order, for
// a subcommand's own parser; `--` and what follows pass through untouched.
TEST(ArgParser, ParseKnownForSubcommands) {
  std::string api;
  bool verbose = false;
  ArgParser global("prog");
  global.option("api", "URL", "base URL", [&](std::string_view v) { api = v; })
      .flag("verbose", "more", [&](bool on) { verbose = on; });
  std::vector<std::string> rest;
  EXPECT_EQ(global.parse_known({"link", "--api", "http://x", "list", "--km", "K1", "--verbose",
                                "-f", "-", "--", "--api"},
                               rest),
            ArgParser::Result::kRun);
  EXPECT_EQ(api, "http://x");
  EXPECT_TRUE(verbose);
  EXPECT_EQ(rest,
            (std::vector<std::string>{"link", "list", "--km", "K1", "-f", "-", "--", "--api"}));
  // The command's parser then refuses what neither knows.
  std::string km;
  std::vector<std::string> words;
  ArgParser verb("prog link list");
  verb.option("km", "ID", "filter", [&](std::string_view v) { km = v; })
      .positionals([&](std::string_view w) { words.emplace_back(w); });
  verb.parse({"list", "--km", "K1"});
  EXPECT_EQ(km, "K1");
  EXPECT_EQ(words, (std::vector<std::string>{"list"}));
  EXPECT_EQ(message_of(verb, {"--kms", "x"}),
            "unknown option '--kms' (did you mean --km?) (see --help)");
}

// A program that declares its own help and version switches gets them as options (and the
// words beside them), not as parse()'s answer; help() does not list them twice.
TEST(ArgParser, OwnHelpAndVersion) {
  bool help = false;
  bool version = false;
  ArgParser p("prog");
  p.flag("help", "this text", [&](bool on) { help = on; })
      .alias("-h", "help")
      .flag("version", "print the version", [&](bool on) { version = on; });
  std::vector<std::string> rest;
  EXPECT_EQ(p.parse_known({"link", "-h"}, rest), ArgParser::Result::kRun);
  EXPECT_TRUE(help);
  EXPECT_FALSE(version);
  EXPECT_EQ(rest, (std::vector<std::string>{"link"}));
  EXPECT_EQ(p.parse({"--version"}), ArgParser::Result::kRun);
  EXPECT_TRUE(version);
  const auto h = p.help();
  EXPECT_EQ(h.find("--help"), h.rfind("--help")) << h;
  EXPECT_EQ(h.find("--version"), h.rfind("--version")) << h;
}

// A two-value option takes the next two arguments as they are; anything else is refused.
TEST(ArgParser, TwoValueOption) {
  std::vector<std::string> pairs;
  std::vector<std::string> words;
  ArgParser p("prog");
  p.option_pair("pair", "SRC DST", "a per-pair override",
                [&](std::string_view a, std::string_view b) {
                  pairs.push_back(std::string(a) + ">" + std::string(b));
                })
      .positionals([&](std::string_view w) { words.emplace_back(w); });
  p.parse({"manual", "--pair", "KM1", "--odd", "--pair", "A", "B"});
  EXPECT_EQ(pairs, (std::vector<std::string>{"KM1>--odd", "A>B"}));
  EXPECT_EQ(words, (std::vector<std::string>{"manual"}));
  EXPECT_EQ(message_of(p, {"--pair", "KM1"}), "--pair: expected two values (SRC DST)");
  EXPECT_EQ(message_of(p, {"--pair=KM1", "KM2"}), "--pair: expected two values (SRC DST)");
  EXPECT_NE(p.help().find("  --pair SRC DST          a per-pair override\n"), std::string::npos)
      << p.help();
  EXPECT_THROW(p.env("pair", "X"), qkdn::Internal);
}

// Value readers: ranges, IPv6 brackets, ports.
TEST(ArgValues, Readers) {
  using namespace qkdn::base;
  EXPECT_EQ(parse_int("--n", "-3", -5, 5), -3);
  EXPECT_THROW(parse_int("--n", "3x", 0, 5), InvalidArgument);
  EXPECT_THROW(parse_int("--n", "", 0, 5), InvalidArgument);
  EXPECT_EQ(parse_uint("--seed", "18446744073709551615", 0, UINT64_MAX), UINT64_MAX);
  EXPECT_THROW(parse_uint("--seed", "-1", 0, UINT64_MAX), InvalidArgument);
  EXPECT_THROW(parse_uint("--seed", "18446744073709551616", 0, UINT64_MAX), InvalidArgument);
  EXPECT_DOUBLE_EQ(parse_double("--q", "0.11", 0, 0.5), 0.11);
  EXPECT_THROW(parse_double("--q", "nan", 0, 1), InvalidArgument);
  EXPECT_THROW(parse_double("--q", "0.7", 0, 0.5), InvalidArgument);
  EXPECT_EQ(parse_ms("--t", "250").count(), 250);
  EXPECT_THROW(parse_ms("--t", "0"), InvalidArgument);
  const auto a = parse_host_port("--l", "[::1]:4164");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 4164);
  const auto b = parse_host_port("--l", ":0");
  EXPECT_EQ(b.host, "");
  EXPECT_EQ(b.port, 0);
  EXPECT_THROW(parse_host_port("--l", "host"), InvalidArgument);
  EXPECT_THROW(parse_host_port("--l", "host:70000"), InvalidArgument);
  EXPECT_THROW(parse_host_port("--l", "::1:80"), InvalidArgument);
}

}  // namespace
