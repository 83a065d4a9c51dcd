// The one command-line parser of the project (qkdn-controller, qkdn-agent, qkdnctl and the tools):
// options declared once with their help text, so that parsing, `--help`, config files and error
// messages agree.
//
//   --name VALUE | --name=VALUE        an option with a value (`option`)
//   --name | --name=true|false         a switch (`flag`)
//   -o VALUE, --ca VALUE               another spelling of a declared option (`alias`)
//   --pair A B                         an option with two values (`option_pair`)
//   --config FILE                      key = value lines, same names (`config_file`)
//   --help / -h, --version             answered by parse()'s result, unless the program declares
//                                      its own `help` / `version` switch
//   words                              positional arguments (`positionals`), `--` ends options
//
// Subcommands (qkdnctl NOUN VERB ...): the program parses its global options with parse_known(),
// which hands back everything it does not know in order, and then gives each command its own
// ArgParser with that command's options and words.
//
// Precedence, lowest first: the config file, then environment variables (`env`), then the command
// line; within one source the last occurrence wins (repeatable options see every occurrence).
// Every refusal is a qkdn::InvalidArgument whose message names the option and what was expected.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace qkdn::base {

/// Parses long options for one program. Not thread-safe; build and use it in main.
class ArgParser {
 public:
  using ValueFn = std::function<void(std::string_view value)>;
  using FlagFn = std::function<void(bool on)>;
  using PairFn = std::function<void(std::string_view first, std::string_view second)>;

  /// What parse() found: run the program, or print help or the version and exit 0.
  enum class Result { kRun, kHelp, kVersion };

  explicit ArgParser(std::string program);

  /// Starts a group of options under `title` in help().
  ArgParser& section(std::string title);
  /// An option that takes a value. `metavar` names it in help ("FILE", "HOST:PORT"); `apply` is
  /// called with each occurrence's value and throws InvalidArgument for a bad one.
  ArgParser& option(std::string name, std::string metavar, std::string help, ValueFn apply);
  /// A switch: given alone it means true; `--name=false` (or `name = false` in a config file)
  /// means false.
  ArgParser& flag(std::string name, std::string help, FlagFn apply);
  /// An option that takes two values (`--pair SRC DST`, qkdnctl's per-pair policy): `metavar`
  /// names both ("SRC DST"). Command line only (no `--name=`, config file or environment).
  ArgParser& option_pair(std::string name, std::string metavar, std::string help, PairFn apply);
  /// The environment variable `variable` supplies option `name` (declared before) when set and
  /// non-empty; the command line overrides it.
  ArgParser& env(const std::string& name, std::string variable);
  /// Enables `--NAME FILE`: key = value lines with the options' names (`_` and `-` alike, `#`
  /// comments, a key alone means true).
  ArgParser& config_file(std::string name = "config");
  /// Accepts words that are not options (e.g. qkdnctl's command); without it they are refused.
  ArgParser& positionals(ValueFn apply);
  /// Another spelling of option `name` (declared before): `-o` (one dash, one letter) or `--ca`.
  /// help() lists it beside the option.
  ArgParser& alias(std::string spelling, const std::string& name);

  /// Parses `args` (argv without the program name). Throws InvalidArgument on an unknown option
  /// (with the closest known name), a missing value, a bad value or a bad config file.
  Result parse(const std::vector<std::string>& args);
  /// Convenience for main: parse(argv[1..argc)).
  Result parse(int argc, const char* const* argv);
  /// Like parse(), but what this parser does not know (unknown options, their values, words, and
  /// `--` with everything after it) is appended to `rest` in order instead of being refused, for a
  /// subcommand's own parser. Positionals are never applied here.
  Result parse_known(const std::vector<std::string>& args, std::vector<std::string>& rest);

  /// The option list for --help, one entry per option, grouped by section, help text wrapped
  /// at `width` columns.
  [[nodiscard]] std::string help(std::size_t width = 100) const;
  /// The program name given to the constructor.
  [[nodiscard]] const std::string& program() const noexcept { return program_; }

 private:
  struct Spec {
    std::string name;
    std::string metavar;               ///< empty for switches
    std::vector<std::string> aliases;  ///< with their dashes
    std::string help;
    std::string section;
    std::string env;
    ValueFn value;
    FlagFn flag;
    PairFn pair;
  };
  /// Adds `spec` under the current section; refuses a name declared twice, or a metavar on a
  /// switch / none on an option that takes values (Internal: a program error).
  ArgParser& declare(Spec spec);
  Result run(const std::vector<std::string>& args, std::vector<std::string>* rest);
  const Spec* find(std::string_view name) const;
  void apply(const Spec& spec, std::string_view value, bool from_command_line,
             const std::string& where);
  void read_config(const std::string& path);
  [[noreturn]] void unknown(std::string_view name, const std::string& where) const;

  std::string program_;
  std::string section_;
  std::string config_name_;
  std::vector<Spec> specs_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::size_t, std::less<>> aliases_;  ///< spelling with dashes -> spec
  ValueFn positional_;
};

/// The integer in `text` within [min, max]; throws InvalidArgument "FLAG: expected an integer
/// in [min, max], got 'TEXT'".
std::int64_t parse_int(std::string_view flag, std::string_view text, std::int64_t min,
                       std::int64_t max);
/// The unsigned integer in `text` within [min, max] (for values beyond INT64_MAX, e.g. seeds).
std::uint64_t parse_uint(std::string_view flag, std::string_view text, std::uint64_t min,
                         std::uint64_t max);
/// The finite number in `text` within [min, max].
double parse_double(std::string_view flag, std::string_view text, double min, double max);
/// true|1|yes|on or false|0|no|off.
bool parse_bool(std::string_view flag, std::string_view text);
/// A positive number of milliseconds (at most one day).
std::chrono::milliseconds parse_ms(std::string_view flag, std::string_view text);

/// HOST:PORT (HOST may be empty, a name, an IPv4 address or a bracketed IPv6 address).
struct HostPort {
  std::string host;  ///< without brackets
  std::uint16_t port = 0;
};
/// Parses HOST:PORT; throws InvalidArgument naming `flag` when the port is missing or not in
/// [0, 65535].
HostPort parse_host_port(std::string_view flag, std::string_view text);

}  // namespace qkdn::base
