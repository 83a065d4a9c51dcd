// Command line of qkdn-agent.
#pragma once

#include <string>
#include <vector>

#include "qkdn/agent/agent.hpp"
#include "qkdn/base/log.hpp"

namespace qkdn::agent {

/// A parsed command line.
struct CommandLine {
  bool help = false;
  bool version = false;  ///< --version: print the version and exit
  /// --log-level (debug|info|warn|error; default info, or debug with QKDN_AGENT_DEBUG set).
  base::LogLevel log_level = base::LogLevel::kInfo;
  base::LogFormat log_format = base::LogFormat::kText;  ///< --log-format text|json
  unsigned threads = 2;
  std::string admin_port_file;  ///< write the bound admin port here (empty = no file)
  std::string etsi_port_file;   ///< write the bound ETSI 014 port here
  std::string iwn_config;       ///< --iwn-config FILE (read into config.iwn_pairs)
  std::string kxi_port_file;    ///< write the bound Kxi' port here (one receiving IWN pair)
  AgentConfig config;
};

/// Parses the arguments (without argv[0]) and loads the topology. Throws InvalidArgument with
/// one line naming the problem.
CommandLine parse_command_line(const std::vector<std::string>& args);

/// The --help text with examples.
std::string usage();

}  // namespace qkdn::agent
