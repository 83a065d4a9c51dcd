#include "qkdn/base/args.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>

#include "qkdn/base/error.hpp"

namespace qkdn::base {
namespace {

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

// Levenshtein distance, for "did you mean" (names are short).
std::size_t distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// Appends `text` to `out` wrapped at `width`, continuation lines indented by `indent`.
void wrap(std::string& out, std::string_view text, std::size_t column, std::size_t indent,
          std::size_t width) {
  std::istringstream words{std::string(text)};
  std::string word;
  bool first = true;
  while (words >> word) {
    if (!first && column + 1 + word.size() > width) {
      out += "\n" + std::string(indent, ' ');
      column = indent;
    } else if (!first) {
      out += ' ';
      ++column;
    }
    out += word;
    column += word.size();
    first = false;
  }
}

}  // namespace

ArgParser::ArgParser(std::string program) : program_(std::move(program)) {}

ArgParser& ArgParser::section(std::string title) {
  section_ = std::move(title);
  return *this;
}

ArgParser& ArgParser::declare(Spec spec) {
  const bool takes_value = spec.value || spec.pair;
  if (index_.contains(spec.name) || takes_value == spec.metavar.empty()) {
    throw Internal("ArgParser: option --" + spec.name +
                   " declared twice, or a metavar that does not match its kind");
  }
  spec.section = section_;
  index_.emplace(spec.name, specs_.size());
  specs_.push_back(std::move(spec));
  return *this;
}

ArgParser& ArgParser::option(std::string name, std::string metavar, std::string help,
                             ValueFn apply) {
  Spec spec;
  spec.name = std::move(name);
  spec.metavar = std::move(metavar);
  spec.help = std::move(help);
  spec.value = std::move(apply);
  return declare(std::move(spec));
}

ArgParser& ArgParser::flag(std::string name, std::string help, FlagFn apply) {
  Spec spec;
  spec.name = std::move(name);
  spec.help = std::move(help);
  spec.flag = std::move(apply);
  return declare(std::move(spec));
}

ArgParser& ArgParser::option_pair(std::string name, std::string metavar, std::string help,
                                  PairFn apply) {
  Spec spec;
  spec.name = std::move(name);
  spec.metavar = std::move(metavar);
  spec.help = std::move(help);
  spec.pair = std::move(apply);
  return declare(std::move(spec));
}

ArgParser& ArgParser::env(const std::string& name, std::string variable) {
  auto it = index_.find(name);
  if (it != index_.end() && specs_[it->second].pair) {
    throw Internal("ArgParser: env for the two-value option --" + name);
  }
  if (it == index_.end()) throw Internal("ArgParser: env for undeclared option --" + name);
  specs_[it->second].env = std::move(variable);
  return *this;
}

ArgParser& ArgParser::config_file(std::string name) {
  config_name_ = std::move(name);
  return *this;
}

ArgParser& ArgParser::positionals(ValueFn apply) {
  positional_ = std::move(apply);
  return *this;
}

ArgParser& ArgParser::alias(std::string spelling, const std::string& name) {
  auto it = index_.find(name);
  const bool short_form = spelling.size() == 2 && spelling[0] == '-' && spelling[1] != '-';
  const bool long_form = spelling.size() > 2 && spelling.starts_with("--");
  if (it == index_.end() || (!short_form && !long_form) || aliases_.contains(spelling) ||
      index_.contains(std::string_view(spelling).substr(short_form ? 1 : 2))) {
    throw Internal("ArgParser: bad alias " + spelling + " for --" + name);
  }
  specs_[it->second].aliases.push_back(spelling);
  aliases_.emplace(std::move(spelling), it->second);
  return *this;
}

const ArgParser::Spec* ArgParser::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &specs_[it->second];
}

void ArgParser::unknown(std::string_view name, const std::string& where) const {
  std::string best;
  std::size_t best_distance = 3;  // suggest only close names
  for (const auto& s : specs_) {
    const auto d = distance(name, s.name);
    if (d < best_distance) {
      best_distance = d;
      best = s.name;
    }
  }
  std::string message = where + "unknown option " + quoted("--" + std::string(name));
  if (!best.empty()) message += " (did you mean --" + best + "?)";
  message += where.empty() ? " (see --help)" : "";
  throw InvalidArgument(message);
}

void ArgParser::apply(const Spec& spec, std::string_view value, bool from_command_line,
                      const std::string& where) {
  const std::string flag = "--" + spec.name;
  try {
    if (spec.pair) {
      throw InvalidArgument(flag + ": takes two values, only on the command line");
    } else if (spec.flag) {
      spec.flag(from_command_line && value.empty() ? true : parse_bool(flag, value));
    } else {
      spec.value(value);
    }
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(where + e.what());
  }
}

void ArgParser::read_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument("--" + config_name_ + ": cannot read " + quoted(path));
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const auto where = path + ":" + std::to_string(number) + ": ";
    const auto text = trim(std::string_view(line).substr(0, line.find('#')));
    if (text.empty()) continue;
    const auto eq = text.find('=');
    std::string key = trim(std::string_view(text).substr(0, eq));
    const std::string value = eq == std::string::npos ? "true" : trim(text.substr(eq + 1));
    std::replace(key.begin(), key.end(), '_', '-');
    if (key == config_name_ || key == "help" || key == "version") {
      throw InvalidArgument(where + quoted(key) + " is not allowed in a config file");
    }
    if (value.empty()) throw InvalidArgument(where + quoted(key) + " has no value");
    const Spec* spec = find(key);
    if (spec == nullptr) unknown(key, where);
    apply(*spec, value, false, where);
  }
}

ArgParser::Result ArgParser::parse(int argc, const char* const* argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return parse(args);
}

ArgParser::Result ArgParser::parse(const std::vector<std::string>& args) {
  return run(args, nullptr);
}

ArgParser::Result ArgParser::parse_known(const std::vector<std::string>& args,
                                         std::vector<std::string>& rest) {
  return run(args, &rest);
}

ArgParser::Result ArgParser::run(const std::vector<std::string>& args,
                                 std::vector<std::string>* rest) {
  // --help and --version win over everything else, even a broken option before them, unless the
  // program declared them as its own switches (qkdnctl answers `NOUN --help` itself).
  const bool own_help = index_.contains("help");
  const bool own_version = index_.contains("version");
  for (const auto& a : args) {
    if (a == "--") break;
    if (!own_help && (a == "--help" || a == "-h")) return Result::kHelp;
    if (!own_version && a == "--version") return Result::kVersion;
  }
  // One pass to split the command line into (spec, value) pairs and positionals, so that the
  // config file and the environment can be applied first.
  struct Given {
    const Spec* spec;
    std::string value;
    std::string second;  ///< of a two-value option
  };
  std::vector<Given> given;
  std::vector<std::string> words;
  std::vector<std::string> configs;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") {
      if (rest != nullptr) {
        rest->insert(rest->end(), args.begin() + static_cast<std::ptrdiff_t>(i), args.end());
      } else {
        words.insert(words.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      }
      break;
    }
    if (a.size() < 2 || a[0] != '-') {
      if (rest != nullptr) {
        rest->push_back(a);
        continue;
      }
      if (!positional_) throw InvalidArgument("unexpected argument " + quoted(a) + " (see --help)");
      words.push_back(a);
      continue;
    }
    // The option's spelling (up to '=' for long options) and an inline value.
    std::string name;
    std::optional<std::string> inline_value;
    const Spec* spec = nullptr;
    if (a[1] != '-') {
      if (auto it = aliases_.find(a); it != aliases_.end()) spec = &specs_[it->second];
      name = a;
    } else {
      name = a.substr(2);
      if (const auto eq = name.find('='); eq != std::string::npos) {
        inline_value = name.substr(eq + 1);
        name.resize(eq);
      }
      if (auto it = aliases_.find("--" + name); it != aliases_.end()) {
        spec = &specs_[it->second];
      } else {
        spec = find(name);
      }
    }
    if (!config_name_.empty() && a[1] == '-' && name == config_name_) {
      if (inline_value) {
        configs.push_back(*inline_value);
      } else if (i + 1 < args.size()) {
        configs.push_back(args[++i]);
      } else {
        throw InvalidArgument("--" + name + ": missing value (a file)");
      }
      continue;
    }
    if (spec == nullptr) {
      if (rest != nullptr) {
        rest->push_back(a);
        continue;
      }
      if (a[1] != '-') throw InvalidArgument("unknown option " + quoted(a) + " (see --help)");
      unknown(name, "");
    }
    const std::string shown = a[1] == '-' ? "--" + name : a;
    if (spec->flag) {
      if (inline_value && inline_value->empty()) {
        throw InvalidArgument(shown + ": expected true or false, got ''");
      }
      given.push_back({spec, inline_value.value_or(""), {}});
      continue;
    }
    if (spec->pair) {
      // Both values are the next two arguments, whatever they look like.
      if (inline_value || i + 2 >= args.size()) {
        throw InvalidArgument(shown + ": expected two values (" + spec->metavar + ")");
      }
      given.push_back({spec, args[i + 1], args[i + 2]});
      i += 2;
      continue;
    }
    if (inline_value) {
      given.push_back({spec, *inline_value, {}});
    } else if (i + 1 < args.size()) {
      given.push_back({spec, args[++i], {}});
    } else {
      throw InvalidArgument(shown + ": missing value (" + spec->metavar + ")");
    }
  }
  for (const auto& path : configs) read_config(path);
  for (const auto& spec : specs_) {
    if (spec.env.empty()) continue;
    const char* v = std::getenv(spec.env.c_str());
    if (v != nullptr && *v != '\0') apply(spec, v, false, spec.env + ": ");
  }
  for (const auto& g : given) {
    if (g.spec->pair) {
      g.spec->pair(g.value, g.second);
    } else {
      apply(*g.spec, g.value, true, "");
    }
  }
  for (const auto& w : words) {
    if (!positional_) throw InvalidArgument("unexpected argument " + quoted(w) + " (see --help)");
    positional_(w);
  }
  return Result::kRun;
}

std::string ArgParser::help(std::size_t width) const {
  constexpr std::size_t kHelpColumn = 26;
  std::string out;
  std::string current = "\x01";  // no section printed yet
  for (const auto& s : specs_) {
    if (s.section != current) {
      current = s.section;
      if (!current.empty()) out += (out.empty() ? "" : "\n") + current + ":\n";
    }
    std::string head = "  ";
    for (const auto& a : s.aliases) {
      if (a.size() == 2) head += a + ", ";  // short spellings first: "-o, --output FMT"
    }
    head += "--" + s.name;
    for (const auto& a : s.aliases) {
      if (a.size() > 2) head += ", " + a;
    }
    head += s.metavar.empty() ? "" : " " + s.metavar;
    out += head;
    std::size_t column = head.size();
    if (column + 2 > kHelpColumn) {
      out += "\n" + std::string(kHelpColumn, ' ');
    } else {
      out += std::string(kHelpColumn - column, ' ');
    }
    std::string text = s.help;
    if (!s.env.empty()) text += " (environment: " + s.env + ")";
    wrap(out, text, kHelpColumn, kHelpColumn, width);
    out += '\n';
  }
  if (!config_name_.empty()) {
    std::string head = "  --" + config_name_ + " FILE";
    out += head + std::string(kHelpColumn > head.size() ? kHelpColumn - head.size() : 1, ' ');
    wrap(out,
         "read options from FILE: one 'name = value' line each, '#' comments; the command line "
         "overrides it",
         kHelpColumn, kHelpColumn, width);
    out += '\n';
  }
  if (!index_.contains("version")) out += "  --version               print the version and exit\n";
  if (!index_.contains("help")) out += "  --help                  this text\n";
  return out;
}

std::int64_t parse_int(std::string_view flag, std::string_view text, std::int64_t min,
                       std::int64_t max) {
  std::int64_t n = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || n < min || n > max) {
    throw InvalidArgument(std::string(flag) + ": expected an integer in [" + std::to_string(min) +
                          ", " + std::to_string(max) + "], got " + quoted(text));
  }
  return n;
}

std::uint64_t parse_uint(std::string_view flag, std::string_view text, std::uint64_t min,
                         std::uint64_t max) {
  std::uint64_t n = 0;
  const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || n < min || n > max) {
    throw InvalidArgument(std::string(flag) + ": expected an integer in [" + std::to_string(min) +
                          ", " + std::to_string(max) + "], got " + quoted(text));
  }
  return n;
}

double parse_double(std::string_view flag, std::string_view text, double min, double max) {
  const std::string s(text);
  char* end = nullptr;
  const double v = s.empty() ? NAN : std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || v < min || v > max) {
    std::ostringstream range;
    range << "[" << min << ", " << max << "]";
    throw InvalidArgument(std::string(flag) + ": expected a number in " + range.str() + ", got " +
                          quoted(text));
  }
  return v;
}

bool parse_bool(std::string_view flag, std::string_view text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  throw InvalidArgument(std::string(flag) + ": expected true or false, got " + quoted(text));
}

std::chrono::milliseconds parse_ms(std::string_view flag, std::string_view text) {
  return std::chrono::milliseconds(parse_int(flag, text, 1, 86'400'000));
}

HostPort parse_host_port(std::string_view flag, std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    throw InvalidArgument(std::string(flag) + ": expected HOST:PORT, got " + quoted(text));
  }
  HostPort hp;
  hp.host = std::string(text.substr(0, colon));
  if (hp.host.size() >= 2 && hp.host.front() == '[' && hp.host.back() == ']') {
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  } else if (hp.host.find(':') != std::string::npos) {
    throw InvalidArgument(std::string(flag) +
                          ": an IPv6 address needs brackets ([::1]:PORT), got " + quoted(text));
  }
  const auto port = text.substr(colon + 1);
  unsigned n = 0;
  const auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  if (port.empty() || ec != std::errc() || p != port.data() + port.size() || n > 65535) {
    throw InvalidArgument(std::string(flag) + ": bad port " + quoted(port) + " in " + quoted(text));
  }
  hp.port = static_cast<std::uint16_t>(n);
  return hp;
}

}  // namespace qkdn::base
