#include "qkdn/psk_tls/psk_tls.hpp"

#include <openssl/err.h>
#include <openssl/objects.h>

#include <exception>

#include "qkdn/base/error.hpp"
#include "qkdn/net/tls.hpp"

namespace qkdn::psk_tls {
namespace {

// TLS_AES_256_GCM_SHA384 (RFC 8446 B.4).
constexpr unsigned char kAes256GcmSha384[2] = {0x13, 0x02};
// A psk_ke server offers only this group, which the client never offers (strongest_groups() does
// not list it): with no group in common, OpenSSL completes the PSK handshake in psk_ke mode
// instead of asking for another key share (OpenSSL 3.0 has no option to prefer psk_ke).
constexpr const char* kPskOnlyServerGroup = "X25519";

std::string openssl_reason() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "the connection closed or timed out";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// Per-connection state the PSK callbacks reach through SSL_get_app_data.
struct PskState {
  const QkdKey* key = nullptr;  // client
  KeyLookup lookup = nullptr;   // server
  void* lookup_context = nullptr;
  QkdKey fetched;  // server: the key of the offered identity
  std::string identity;
  std::string error;
};

SSL_SESSION* make_session(const SSL_CIPHER* cipher, const SecretBytes& key) {
  SSL_SESSION* s = SSL_SESSION_new();
  if (s == nullptr) return nullptr;
  if (SSL_SESSION_set1_master_key(s, key.data(), key.size()) != 1 ||
      SSL_SESSION_set_cipher(s, cipher) != 1 ||
      SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) != 1) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

int use_session(SSL* ssl, const EVP_MD* md, const unsigned char** id, std::size_t* idlen,
                SSL_SESSION** sess) {
  auto* st = static_cast<PskState*>(SSL_get_app_data(ssl));
  *sess = nullptr;
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes256GcmSha384);
  if (st == nullptr || st->key == nullptr || cipher == nullptr) return 0;
  // After a HelloRetryRequest OpenSSL asks again with the chosen suite's hash.
  if (md != nullptr && md != SSL_CIPHER_get_handshake_digest(cipher)) return 1;
  *sess = make_session(cipher, st->key->key);
  if (*sess == nullptr) return 0;
  *id = reinterpret_cast<const unsigned char*>(st->key->key_id.data());
  *idlen = st->key->key_id.size();
  return 1;
}

int find_session(SSL* ssl, const unsigned char* identity, std::size_t identity_len,
                 SSL_SESSION** sess) {
  auto* st = static_cast<PskState*>(SSL_get_app_data(ssl));
  *sess = nullptr;
  if (st == nullptr || st->lookup == nullptr) return 0;
  st->identity.assign(reinterpret_cast<const char*>(identity), identity_len);
  if (!is_uuid(st->identity)) {
    st->error = "the client's PSK identity is not a key_ID";
    return 1;  // no PSK: the handshake fails (the server has no certificate)
  }
  try {
    st->fetched = st->lookup(st->lookup_context, st->identity);
  } catch (const std::exception& e) {
    st->error = std::string("no key for the client's key_ID: ") + e.what();
    return 1;
  }
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes256GcmSha384);
  if (cipher == nullptr) return 0;
  *sess = make_session(cipher, st->fetched.key);
  return *sess == nullptr ? 0 : 1;
}

// Checks that the handshake used the PSK in the asked mode and fills `out`.
void check_handshake(SSL* ssl, Kex kex, std::string key_id, Handshake& out) {
  if (SSL_session_reused(ssl) != 1) throw Unavailable("the handshake did not use the QKD key");
  const int group = static_cast<int>(SSL_get_negotiated_group(ssl));
  const Kex used = group == NID_undef ? Kex::kPskOnly : Kex::kPskDhe;
  if (used != kex) {
    throw Unavailable("the peer used " + std::string(kex_name(used)) + ", this end asked " +
                      std::string(kex_name(kex)));
  }
  out.key_id = std::move(key_id);
  out.kex = used;
  out.group.clear();
  if (used == Kex::kPskDhe) {
    const char* name = OBJ_nid2sn(group);
    out.group = name != nullptr ? name : "group " + std::to_string(group);
  }
  out.cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
}

SSL* new_ssl(SSL_CTX* ctx, int fd, PskState& st) {
  SSL* ssl = SSL_new(ctx);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    throw Internal("TLS: " + openssl_reason());
  }
  SSL_set_app_data(ssl, &st);
  return ssl;
}

}  // namespace

std::string_view kex_name(Kex kex) noexcept {
  return kex == Kex::kPskOnly ? "psk_ke" : "psk_dhe_ke";
}

Kex parse_kex(std::string_view text) {
  if (text == "psk_ke") return Kex::kPskOnly;
  if (text == "psk_dhe_ke") return Kex::kPskDhe;
  throw InvalidArgument("--kex: expected psk_ke or psk_dhe_ke, got '" + std::string(text) + "'");
}

SSL_CTX* make_context(bool server, Kex kex) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) throw Internal("TLS: " + openssl_reason());
  const std::string groups =
      server && kex == Kex::kPskOnly ? kPskOnlyServerGroup : net::strongest_groups();
  // No session tickets: each connection takes a fresh QKD key (a ticket would be keyed from it).
  std::uint64_t options = SSL_OP_CLEANSE_PLAINTEXT | SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION;
  if (kex == Kex::kPskOnly) options |= SSL_OP_ALLOW_NO_DHE_KEX;
  SSL_CTX_set_options(ctx, options);
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_ciphersuites(ctx, "TLS_AES_256_GCM_SHA384") != 1 ||
      SSL_CTX_set1_groups_list(ctx, groups.c_str()) != 1 ||
      (server && SSL_CTX_set_num_tickets(ctx, 0) != 1)) {
    SSL_CTX_free(ctx);
    throw Internal("TLS: cannot configure the PSK context: " + openssl_reason());
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);  // the PSK authenticates both ends
  if (server) {
    SSL_CTX_set_psk_find_session_callback(ctx, find_session);
  } else {
    SSL_CTX_set_psk_use_session_callback(ctx, use_session);
  }
  return ctx;
}

SSL* client_handshake(SSL_CTX* ctx, int fd, const QkdKey& key, Kex kex, Handshake& out) {
  PskState st;
  st.key = &key;
  SSL* ssl = new_ssl(ctx, fd, st);
  if (SSL_connect(ssl) != 1) {
    const std::string why = openssl_reason();
    SSL_free(ssl);
    throw Unavailable("TLS handshake refused (the server has no key for key_ID " + key.key_id +
                      ", or another mode): " + why);
  }
  SSL_set_app_data(ssl, nullptr);
  try {
    check_handshake(ssl, kex, key.key_id, out);
  } catch (...) {
    SSL_free(ssl);
    throw;
  }
  return ssl;
}

SSL* server_handshake(SSL_CTX* ctx, int fd, Kex kex, KeyLookup lookup, void* context,
                      Handshake& out) {
  PskState st;
  st.lookup = lookup;
  st.lookup_context = context;
  SSL* ssl = new_ssl(ctx, fd, st);
  if (SSL_accept(ssl) != 1) {
    const std::string why = st.error.empty() ? openssl_reason() : st.error;
    ERR_clear_error();
    SSL_free(ssl);
    throw Unavailable("TLS handshake failed: " + why);
  }
  SSL_set_app_data(ssl, nullptr);
  try {
    check_handshake(ssl, kex, st.identity, out);
  } catch (...) {
    SSL_free(ssl);
    throw;
  }
  return ssl;
}

void write_line(SSL* ssl, std::string_view text) {
  std::string line(text);
  line += '\n';
  std::size_t written = 0;
  if (SSL_write_ex(ssl, line.data(), line.size(), &written) != 1 || written != line.size()) {
    throw Unavailable("TLS write: " + openssl_reason());
  }
}

std::string read_line(SSL* ssl, std::size_t max_bytes) {
  std::string line;
  char c = 0;
  for (;;) {
    std::size_t n = 0;
    if (SSL_read_ex(ssl, &c, 1, &n) != 1) {
      if (SSL_get_error(ssl, 0) == SSL_ERROR_ZERO_RETURN && !line.empty()) return line;
      throw Unavailable("TLS read: " + openssl_reason());
    }
    if (c == '\n') return line;
    if (line.size() >= max_bytes) {
      throw InvalidArgument("a line longer than " + std::to_string(max_bytes) + " bytes");
    }
    line += c;
  }
}

}  // namespace qkdn::psk_tls
