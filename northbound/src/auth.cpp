#include "auth.hpp"

#include <fstream>
#include <set>
#include <sstream>

#include "api_util.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::northbound {

std::string_view to_string(Role r) noexcept { return r == Role::kAdmin ? "admin" : "viewer"; }

namespace {

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

TokenTable TokenTable::parse(std::string_view text) {
  TokenTable t;
  std::set<std::string> names;
  std::istringstream in{std::string(text)};
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    auto where = "tokens file line " + std::to_string(number) + ": ";
    auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string name, role, digest, extra;
    if (!(words >> name)) continue;
    if (!(words >> role >> digest) || (words >> extra)) {
      throw InvalidArgument(where + "expected 'NAME ROLE SHA256-HEX'");
    }
    if (!valid_name(name)) throw InvalidArgument(where + "bad token name '" + name + "'");
    TokenEntry e;
    e.name = name;
    if (role == "admin") {
      e.role = Role::kAdmin;
    } else if (role != "viewer") {
      throw InvalidArgument(where + "role must be viewer or admin, got '" + role + "'");
    }
    if (digest.size() != 64) throw InvalidArgument(where + "hash must be 64 hex digits");
    for (auto& c : digest) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
        throw InvalidArgument(where + "hash must be 64 hex digits");
      }
    }
    if (!names.insert(name).second) throw InvalidArgument(where + "duplicate name '" + name + "'");
    if (!t.by_hash_.emplace(digest, e).second) throw InvalidArgument(where + "duplicate hash");
  }
  return t;
}

TokenTable TokenTable::load(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw InvalidArgument("cannot read tokens file '" + path + "'");
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return parse(ss.str());
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(path + ": " + e.what());
  }
}

std::optional<TokenEntry> TokenTable::find(std::string_view token) const {
  if (token.empty() || token.size() > 4096) return std::nullopt;
  auto it = by_hash_.find(sha256_hex(token));
  if (it == by_hash_.end()) return std::nullopt;
  return it->second;
}

}  // namespace qkdn::northbound
