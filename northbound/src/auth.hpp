// Bearer tokens of the northbound API: a file of `NAME ROLE SHA256-HEX` lines. Private to
// qkdn_northbound.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace qkdn::northbound {

enum class Role { kViewer, kAdmin };
std::string_view to_string(Role r) noexcept;

/// A configured token (without its secret).
struct TokenEntry {
  std::string name;
  Role role = Role::kViewer;
};

/// Tokens by the SHA-256 of their text. Immutable after construction: safe from any thread.
class TokenTable {
 public:
  TokenTable() = default;
  /// Parses a tokens file's text; throws InvalidArgument naming the line ("tokens file line 3:
  /// ..."). Names are 1..64 of [A-Za-z0-9._@-] and unique; roles viewer | admin; hashes are 64
  /// lower- or upper-case hex digits, unique.
  static TokenTable parse(std::string_view text);
  /// Reads and parses a file; throws InvalidArgument.
  static TokenTable load(const std::string& path);

  /// The entry whose hash matches sha256(token), or nullopt.
  [[nodiscard]] std::optional<TokenEntry> find(std::string_view token) const;
  [[nodiscard]] std::size_t size() const noexcept { return by_hash_.size(); }

 private:
  std::unordered_map<std::string, TokenEntry> by_hash_;
};

}  // namespace qkdn::northbound
