// Command line of qkdn-agent.
#pragma once

#include <string>
#include <vector>

#include "qkdn/agent/agent.hpp"

namespace qkdn::agent {

/// A parsed command line.
struct CommandLine {
  bool help = false;
  unsigned threads = 2;
  AgentConfig config;
};

/// Parses the arguments (without argv[0]) and loads the topology. Throws InvalidArgument with
/// one line naming the problem.
CommandLine parse_command_line(const std::vector<std::string>& args);

/// The --help text with examples.
std::string usage();

}  // namespace qkdn::agent
