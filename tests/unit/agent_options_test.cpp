// qkdn-agent's command line (options.cpp) over the shared parser: what it sets, what it refuses
// and the help generated from the declarations.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "qkdn/agent/options.hpp"
#include "qkdn/base/error.hpp"

namespace {

using qkdn::agent::parse_command_line;

const std::string kTopology = QKDN_TEST_TOPOLOGY;

std::vector<std::string> lab(std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--topology",     kTopology,       "--all",         "--controller",
                                "127.0.0.1:5600", "--insecure-ck", "--insecure-kma"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string refusal(const std::vector<std::string>& args) {
  try {
    parse_command_line(args);
  } catch (const qkdn::InvalidArgument& e) {
    return e.what();
  }
  return "(accepted)";
}

// A lab command line: every KM of the topology, the controller address, repeatable --km, the
// full 64-bit seed range, both spellings of a value.
TEST(AgentOptions, LabCommandLine) {
  ::unsetenv("QKDN_AGENT_DEBUG");
  const auto cl =
      parse_command_line(lab({"--seed=18446744073709551615", "--threads", "4", "--admin-listen",
                              "127.0.0.1:0", "--log-format", "json"}));
  EXPECT_FALSE(cl.help);
  EXPECT_EQ(cl.config.km_ids.size(), 4u);  // tokyo-qkd.json has four KMs
  EXPECT_EQ(cl.config.controller_host, "127.0.0.1");
  EXPECT_EQ(cl.config.controller_port, 5600);
  EXPECT_EQ(cl.config.seed, UINT64_MAX);
  EXPECT_EQ(cl.threads, 4u);
  EXPECT_EQ(cl.config.admin_port, 0);
  EXPECT_EQ(cl.log_format, qkdn::base::LogFormat::kJson);
  EXPECT_EQ(cl.log_level, qkdn::base::LogLevel::kInfo);
  const auto two =
      parse_command_line({"--topology", kTopology, "--km", "KOG", "--km", "OTE", "--controller",
                          "[::1]:5600", "--insecure-ck", "--insecure-kma"});
  EXPECT_EQ(two.config.km_ids, (std::vector<std::string>{"KOG", "OTE"}));
  EXPECT_EQ(two.config.controller_host, "::1");
}

// Each refusal is one line naming the option.
TEST(AgentOptions, Refusals) {
  EXPECT_EQ(refusal({"--all", "--controller", "127.0.0.1:1"}), "--topology FILE is required");
  EXPECT_EQ(refusal(lab({"--controller", ":5600"})),
            "--controller: expected HOST:PORT, got ':5600'");
  EXPECT_EQ(refusal(lab({"--controller", "h:0"})), "--controller: port must not be 0");
  EXPECT_EQ(refusal(lab({"--km", "KOG"})), "give either --km ID (repeatable) or --all");
  EXPECT_EQ(
      refusal({"--topology", kTopology, "--all", "--controller", "127.0.0.1:1", "--insecure-ck"}),
      "KMA links carry key material: give --tls-ca and --tls-cert-dir, or --insecure-kma "
      "(--insecure-ck does not imply it)");
  EXPECT_EQ(refusal(lab({"--threads", "0"})),
            "--threads: expected an integer in [1, 256], got '0'");
  EXPECT_EQ(refusal(lab({"--qber-threshold", "2"})).rfind("--qber-threshold: expected a number", 0),
            0u);
  EXPECT_EQ(refusal(lab({"--seed", "-1"})).rfind("--seed: expected an integer", 0), 0u);
  EXPECT_EQ(refusal(lab({"--admin-listen", "0.0.0.0:0"})),
            "--admin-listen 0.0.0.0: a non-loopback address needs --admin-token-file FILE");
  EXPECT_EQ(refusal(lab({"--etsi-cert", "x.pem"})),
            "--etsi-cert/--etsi-key/--etsi-ca/--etsi-port-file need --etsi-listen");
  EXPECT_EQ(refusal(lab({"--sae-key-size", "12"})),
            "--sae-key-size: expected a multiple of 8 up to --sae-max-key-size");
  EXPECT_EQ(refusal(lab({"--kma-listn-host"})),
            "unknown option '--kma-listn-host' (did you mean --kma-listen-host?) (see --help)");
  EXPECT_EQ(refusal(lab({"--topology"})), "--topology: missing value (FILE)");
  EXPECT_EQ(refusal(lab({"stray"})), "unexpected argument 'stray' (see --help)");
}

// --help and --version answer before anything is checked or loaded.
TEST(AgentOptions, HelpAndVersion) {
  EXPECT_TRUE(parse_command_line({"--bogus", "--help"}).help);
  EXPECT_TRUE(parse_command_line({"-h"}).help);
  EXPECT_TRUE(parse_command_line({"--version"}).version);
}

// QKDN_AGENT_DEBUG means debug; --log-level overrides it.
TEST(AgentOptions, DebugEnvironment) {
  ::setenv("QKDN_AGENT_DEBUG", "1", 1);
  EXPECT_EQ(parse_command_line(lab()).log_level, qkdn::base::LogLevel::kDebug);
  EXPECT_EQ(parse_command_line(lab({"--log-level", "warn"})).log_level,
            qkdn::base::LogLevel::kWarn);
  ::unsetenv("QKDN_AGENT_DEBUG");
  EXPECT_EQ(refusal(lab({"--log-level", "loud"})),
            "--log-level: expected debug, info, warn or error");
}

// The help lists every option from its declaration, under its section, with the examples.
TEST(AgentOptions, UsageFromDeclarations) {
  const auto u = qkdn::agent::usage();
  for (const char* head :
       {"  --topology FILE ", "  --km ID ", "  --all ", "  --controller HOST:PORT[,HOST:PORT...]\n",
        "  --admin-token-file FILE", "  --etsi-listen IP:PORT ", "  --sae-max-waiting-bytes N",
        "  --seed N ", "  --version ", "  --help "}) {
    EXPECT_NE(u.find(head), std::string::npos) << head << "\n" << u;
  }
  EXPECT_NE(u.find("ETSI GS QKD 014 v1.1.1 key delivery to SAEs"), std::string::npos) << u;
  EXPECT_NE(u.find("Examples:\n"), std::string::npos) << u;
}

}  // namespace
