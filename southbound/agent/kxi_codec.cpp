// Kxi' key transfer message codec (ext_keys of ETSI GS QKD 020): see kxi_codec.hpp.
#include "kxi_codec.hpp"

#include <algorithm>
#include <set>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <boost/json.hpp>
#include <boost/json/static_resource.hpp>

namespace qkdn::agent::kxi {

namespace json = boost::json;

namespace {

constexpr std::string_view kPrefix = "/api/v1/keys/";
constexpr std::string_view kSuffix = "/ext_keys";

Answer bad(std::string message, std::string name, std::string text) {
  return Answer{400, std::move(message), {{std::move(name), std::move(text)}}};
}

std::string limited(std::string_view s) {
  return std::string(s.substr(0, 64)) + (s.size() > 64 ? "..." : "");
}

bool b64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  return c == '+' ? 62 : 63;
}

/// Decodes canonical base64 (RFC 4648 section 4, padded, no line breaks, zero pad bits) into key
/// memory; false when `text` is not that.
bool decode_base64(std::string_view text, secure::Bytes& out) {
  if (text.empty() || text.size() % 4 != 0) return false;
  std::size_t pad = 0;
  if (text.back() == '=') pad = text[text.size() - 2] == '=' ? 2 : 1;
  for (std::size_t i = 0; i < text.size() - pad; ++i) {
    if (!b64_char(text[i])) return false;
  }
  if (pad > 0) {  // the bits the padding leaves over must be zero (one text per key)
    const int last = b64_value(text[text.size() - pad - 1]);
    if ((pad == 1 && (last & 0x3) != 0) || (pad == 2 && (last & 0xF) != 0)) return false;
  }
  out.resize(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0 || static_cast<std::size_t>(n) != out.size()) {
    OPENSSL_cleanse(out.data(), out.size());
    out.clear();
    return false;
  }
  out.resize(out.size() - pad);  // the secure allocator keeps the buffer; nothing is copied
  return true;
}

/// A boost::json memory resource over key memory: the parsed tree (which holds the base64 key
/// text) never touches the ordinary heap, and the buffer is wiped when freed.
struct KeyArena {
  explicit KeyArena(std::size_t n) : buffer(n), resource(buffer.data(), buffer.size()) {}
  secure::Bytes buffer;
  json::static_resource resource;
};

}  // namespace

bool valid_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
  });
}

bool valid_uuid(std::string_view id) noexcept {
  if (id.size() != 36) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::string path(std::string_view initiator_sae, std::string_view target_sae) {
  std::string p(kPrefix);
  p += initiator_sae;
  p += '/';
  p += target_sae;
  p += kSuffix;
  return p;
}

std::variant<std::pair<std::string, std::string>, Answer> match(std::string_view p) {
  auto not_found = Answer{
      404, "not found", {{"path", "expected " + path("{initiator_SAE_ID}", "{target_SAE_ID}")}}};
  if (!p.starts_with(kPrefix) || !p.ends_with(kSuffix)) return not_found;
  std::string_view rest = p.substr(kPrefix.size(), p.size() - kPrefix.size() - kSuffix.size());
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos || rest.find('/', slash + 1) != std::string_view::npos) {
    return not_found;
  }
  const std::string_view initiator = rest.substr(0, slash);
  const std::string_view target = rest.substr(slash + 1);
  if (!valid_id(initiator)) {
    return bad("bad request format", "initiator_SAE_ID",
               "'" + limited(initiator) + "' is not an SAE ID (1..128 of A-Z a-z 0-9 . _ : -)");
  }
  if (!valid_id(target)) {
    return bad("bad request format", "target_SAE_ID",
               "'" + limited(target) + "' is not an SAE ID (1..128 of A-Z a-z 0-9 . _ : -)");
  }
  if (initiator == target) {
    return bad("bad request format", "target_SAE_ID", "initiator and target SAE are the same");
  }
  return std::pair<std::string, std::string>{std::string(initiator), std::string(target)};
}

std::string encode_request(const TransferRequest& request) {
  std::size_t total = 64;
  for (const auto& k : request.keys) {
    total += k.key_id.size() + 4 * ((k.value.size() + 2) / 3) + 48;
    if (k.extension) total += k.extension->size() + 16;
  }
  if (request.transfer_id) total += request.transfer_id->size() + 48;
  for (const auto& e : request.other_extensions) total += e.size() + 1;
  std::string out;
  out.reserve(total + 1);
  out += "{\"keys\":[";
  for (std::size_t i = 0; i < request.keys.size(); ++i) {
    const auto& k = request.keys[i];
    if (i > 0) out += ',';
    out += "{\"key_id\":";
    out += json::serialize(json::string(k.key_id));
    out += ",\"value\":\"";
    const std::size_t pos = out.size();
    const std::size_t b64 = 4 * ((k.value.size() + 2) / 3);
    out.resize(pos + b64 + 1);  // EVP_EncodeBlock writes a terminating NUL
    EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + pos), k.value.data(),
                    static_cast<int>(k.value.size()));
    out.resize(pos + b64);
    out += '"';
    if (k.extension) {
      out += ",\"extension\":";
      out += *k.extension;
    }
    out += '}';
  }
  out += ']';
  if (request.transfer_id || !request.other_extensions.empty()) {
    out += ",\"extension_optional\":[";
    bool first = true;
    if (request.transfer_id) {
      out += json::serialize(json::object{{"transfer_id", *request.transfer_id}});
      first = false;
    }
    for (const auto& e : request.other_extensions) {
      if (!first) out += ',';
      out += e;
      first = false;
    }
    out += ']';
  }
  out += '}';
  return out;
}

std::variant<TransferRequest, Answer> parse_request(std::string initiator_sae,
                                                    std::string target_sae, std::string_view body,
                                                    const Limits& limits) {
  if (body.size() > kMaxBodyBytes) {
    return Answer{413,
                  "request too large",
                  {{"body", "at most " + std::to_string(kMaxBodyBytes) + " bytes"}}};
  }
  // The tree holds the base64 key text: it lives in key memory, wiped when `arena` goes.
  KeyArena arena(body.size() * 3 + std::size_t{64} * 1024);
  json::value root;
  {
    boost::system::error_code ec;
    json::parse_options opt;
    opt.max_depth = 8;
    try {
      root = json::parse(body, ec, json::storage_ptr(&arena.resource), opt);
    } catch (const std::bad_alloc&) {
      return bad("bad request format", "body", "too complex a JSON document");
    }
    if (ec) return bad("bad request format", "body", "not JSON: " + ec.message());
  }
  if (!root.is_object()) return bad("bad request format", "body", "expected a JSON object");
  const auto& obj = root.get_object();
  for (const auto& [name, v] : obj) {
    if (name != "keys" && name != "extension_optional") {
      return bad("bad request format", std::string(name), "unknown field of ext_key_container");
    }
  }
  TransferRequest r;
  r.initiator_sae = std::move(initiator_sae);
  r.target_sae = std::move(target_sae);

  if (const auto* ext = obj.if_contains("extension_optional")) {
    if (!ext->is_array()) return bad("bad request format", "extension_optional", "not an array");
    const auto& items = ext->get_array();
    if (items.size() > kMaxExtensionItems) {
      return bad("bad request format", "extension_optional",
                 "more than " + std::to_string(kMaxExtensionItems) + " items");
    }
    if (json::serialize(items).size() > kMaxExtensionBytes) {
      return bad("bad request format", "extension_optional",
                 "longer than " + std::to_string(kMaxExtensionBytes) + " bytes");
    }
    for (const auto& item : items) {
      if (!item.is_object()) {
        return bad("bad request format", "extension_optional", "an item is not an object");
      }
      const auto& o = item.get_object();
      if (const auto* t = o.if_contains("transfer_id")) {
        if (o.size() != 1 || !t->is_string() || !valid_uuid(t->get_string()) || r.transfer_id) {
          return bad("bad request format", "extension_optional",
                     "transfer_id must be one UUID, alone in its object, given once");
        }
        r.transfer_id = std::string(t->get_string());
      } else {
        r.other_extensions.push_back(json::serialize(o));
      }
    }
  }

  const auto* keys = obj.if_contains("keys");
  if (keys == nullptr) return bad("bad request format", "keys", "missing");
  if (!keys->is_array()) return bad("bad request format", "keys", "not an array");
  const auto& arr = keys->get_array();
  if (arr.empty()) return bad("bad request format", "keys", "empty");
  if (arr.size() > limits.max_keys) {
    return Answer{413, "too many keys", {{"keys", "at most " + std::to_string(limits.max_keys)}}};
  }
  std::set<std::string> seen;
  std::optional<std::size_t> size;
  r.keys.reserve(arr.size());
  for (std::size_t i = 0; i < arr.size(); ++i) {
    const std::string where = "keys[" + std::to_string(i) + "]";
    if (!arr[i].is_object()) return bad("bad request format", where, "not an object");
    const auto& k = arr[i].get_object();
    for (const auto& [name, v] : k) {
      if (name != "key_id" && name != "value" && name != "extension") {
        return bad("bad request format", where + "." + std::string(name), "unknown field");
      }
    }
    const auto* id = k.if_contains("key_id");
    const auto* value = k.if_contains("value");
    if (id == nullptr || !id->is_string() || !valid_uuid(id->get_string())) {
      return bad("bad request format", where + ".key_id", "missing or not a lower-case UUID");
    }
    if (!seen.insert(std::string(id->get_string())).second) {
      return bad("bad request format", where + ".key_id",
                 "duplicate key_id " + std::string(id->get_string()));
    }
    if (value == nullptr || !value->is_string()) {
      return bad("bad request format", where + ".value", "missing or not a string");
    }
    Key key;
    key.key_id = std::string(id->get_string());
    if (!decode_base64(value->get_string(), key.value)) {
      return bad("bad request format", where + ".value", "not canonical base64");
    }
    const auto bits = static_cast<std::int64_t>(key.value.size()) * 8;
    if (bits < limits.min_key_bits || bits > limits.max_key_bits) {
      return bad("key size not supported", where + ".value",
                 std::to_string(bits) + " bits is not in [" + std::to_string(limits.min_key_bits) +
                     ", " + std::to_string(limits.max_key_bits) + "]");
    }
    if (size && *size != key.value.size()) {
      return bad("key size not supported", where + ".value",
                 "every key of a transfer has the same size (" + std::to_string(*size * 8) +
                     " bits, this one " + std::to_string(bits) + ")");
    }
    size = key.value.size();
    if (const auto* e = k.if_contains("extension")) {
      if (!e->is_object()) return bad("bad request format", where + ".extension", "not an object");
      auto text = json::serialize(*e);
      if (text.size() > kMaxExtensionBytes) {
        return bad("bad request format", where + ".extension",
                   "longer than " + std::to_string(kMaxExtensionBytes) + " bytes");
      }
      key.extension = std::move(text);
    }
    r.keys.push_back(std::move(key));
  }
  // The base64 strings of the tree: wipe them now rather than trusting the arena alone.
  for (auto& v : root.get_object()["keys"].get_array()) {
    if (auto* s = v.get_object().if_contains("value"); s != nullptr && s->is_string()) {
      auto& str = s->get_string();
      if (!str.empty()) OPENSSL_cleanse(str.data(), str.size());
    }
  }
  return r;
}

std::string encode_answer(const Answer& answer) {
  json::object o{{"message", answer.message}};
  if (!answer.details.empty()) {
    json::array d;
    for (const auto& [name, text] : answer.details) d.push_back(json::object{{name, text}});
    o["details"] = std::move(d);
  }
  return json::serialize(o);
}

std::optional<Answer> parse_answer(int status, std::string_view body, std::string& why) {
  if (body.size() > kMaxResponseBytes) {
    why = "answer longer than " + std::to_string(kMaxResponseBytes) + " bytes";
    return std::nullopt;
  }
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) {
    why = "answer is not a JSON object";
    return std::nullopt;
  }
  const auto& o = v.get_object();
  const auto* m = o.if_contains("message");
  if (m == nullptr || !m->is_string()) {
    why = "answer has no string message (message_data)";
    return std::nullopt;
  }
  Answer a;
  a.status = status;
  a.message = std::string(m->get_string());
  if (const auto* d = o.if_contains("details")) {
    if (!d->is_array() || d->get_array().size() > 64) {
      why = "answer details is not an array of at most 64 items";
      return std::nullopt;
    }
    for (const auto& item : d->get_array()) {
      if (!item.is_object()) {
        why = "answer details item is not an object";
        return std::nullopt;
      }
      for (const auto& [name, text] : item.get_object()) {
        a.details.emplace_back(std::string(name), text.is_string() ? std::string(text.get_string())
                                                                   : json::serialize(text));
      }
    }
  }
  return a;
}

}  // namespace qkdn::agent::kxi
