// tools/psk_tls: TLS 1.3 keyed by a QKD key. The two ends run on a socketpair in two threads with
// fixed keys (no KM): the handshake succeeds with the same key in both modes and reports it; a
// different key, a mode mismatch and an identity that is not a key_ID end the handshake.
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <csignal>
#include <future>
#include <memory>
#include <string>

#include "qkdn/base/error.hpp"
#include "qkdn/psk_tls/psk_tls.hpp"
#include "qkdn/psk_tls/socket.hpp"

namespace {

namespace pt = qkdn::psk_tls;

// As in the tool's main: a peer that closes while we write gives an error, not SIGPIPE.
const bool kSigpipeIgnored = std::signal(SIGPIPE, SIG_IGN) != SIG_ERR;

constexpr const char* kKeyId = "0b6c1f4e-2a7d-4c1e-9f3a-5d8e7b6a4c21";

pt::QkdKey make_key(std::string id, std::uint8_t fill) {
  pt::QkdKey k;
  k.key_id = std::move(id);
  k.key.assign(32, fill);
  return k;
}

// The server's KM: knows kKeyId with the bytes in `context` (a fill byte).
pt::QkdKey known_key(void* context, std::string_view key_id) {
  if (key_id != kKeyId) throw qkdn::NotFound("unknown key_ID");
  return make_key(std::string(key_id), *static_cast<std::uint8_t*>(context));
}

struct Outcome {
  bool client_ok = false;
  bool server_ok = false;
  pt::Handshake client;
  pt::Handshake server;
  std::string received;  // the server's line
  std::string reply;     // the client's
  std::string error;
};

Outcome run(const pt::QkdKey& client_key, pt::Kex client_kex, pt::Kex server_kex,
            std::uint8_t server_fill) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) throw std::runtime_error("socketpair");
  pt::Socket a(fds[0]);
  pt::Socket b(fds[1]);
  Outcome o;
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> sctx(pt::make_context(true, server_kex),
                                                         &SSL_CTX_free);
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> cctx(pt::make_context(false, client_kex),
                                                         &SSL_CTX_free);
  auto server = std::async(std::launch::async, [&] {
    try {
      SSL* ssl =
          pt::server_handshake(sctx.get(), b.fd(), server_kex, known_key, &server_fill, o.server);
      o.received = pt::read_line(ssl, 1024);
      pt::write_line(ssl, "echo: " + o.received);
      SSL_free(ssl);
      o.server_ok = true;
    } catch (const qkdn::Error& e) {
      o.error += std::string("server: ") + e.what() + "; ";
      ::shutdown(b.fd(), SHUT_RDWR);
    }
  });
  try {
    SSL* ssl = pt::client_handshake(cctx.get(), a.fd(), client_key, client_kex, o.client);
    pt::write_line(ssl, "hello");
    o.reply = pt::read_line(ssl, 1024);
    SSL_free(ssl);
    o.client_ok = true;
  } catch (const qkdn::Error& e) {
    o.error += std::string("client: ") + e.what() + "; ";
    ::shutdown(a.fd(), SHUT_RDWR);
  }
  server.get();
  return o;
}

TEST(PskTls, PskOnlyUsesTheKeyAndNoGroup) {
  const auto o = run(make_key(kKeyId, 0x5a), pt::Kex::kPskOnly, pt::Kex::kPskOnly, 0x5a);
  ASSERT_TRUE(o.client_ok && o.server_ok) << o.error;
  EXPECT_EQ(o.client.key_id, kKeyId);
  EXPECT_EQ(o.server.key_id, kKeyId);
  EXPECT_EQ(o.client.kex, pt::Kex::kPskOnly);
  EXPECT_EQ(o.server.kex, pt::Kex::kPskOnly);
  EXPECT_TRUE(o.client.group.empty());
  EXPECT_EQ(o.client.cipher, "TLS_AES_256_GCM_SHA384");
  EXPECT_EQ(o.received, "hello");
  EXPECT_EQ(o.reply, "echo: hello");
}

TEST(PskTls, PskDheMixesInAGroup) {
  const auto o = run(make_key(kKeyId, 0x33), pt::Kex::kPskDhe, pt::Kex::kPskDhe, 0x33);
  ASSERT_TRUE(o.client_ok && o.server_ok) << o.error;
  EXPECT_EQ(o.client.kex, pt::Kex::kPskDhe);
  EXPECT_FALSE(o.client.group.empty());
  EXPECT_EQ(o.client.group, o.server.group);
  EXPECT_EQ(o.reply, "echo: hello");
}

TEST(PskTls, DifferentKeyBytesFail) {
  const auto o = run(make_key(kKeyId, 0x01), pt::Kex::kPskOnly, pt::Kex::kPskOnly, 0x02);
  EXPECT_FALSE(o.client_ok);
  EXPECT_FALSE(o.server_ok);
}

TEST(PskTls, UnknownOrMalformedIdentityFails) {
  auto o = run(make_key("1b6c1f4e-2a7d-4c1e-9f3a-5d8e7b6a4c21", 0x5a), pt::Kex::kPskOnly,
               pt::Kex::kPskOnly, 0x5a);
  EXPECT_FALSE(o.client_ok || o.server_ok);
  EXPECT_NE(o.error.find("no key for the client's key_ID"), std::string::npos) << o.error;
  o = run(make_key("not-a-key-id", 0x5a), pt::Kex::kPskOnly, pt::Kex::kPskOnly, 0x5a);
  EXPECT_FALSE(o.client_ok || o.server_ok);
  EXPECT_NE(o.error.find("not a key_ID"), std::string::npos) << o.error;
}

TEST(PskTls, ModeMismatchIsRefused) {
  // A psk_dhe_ke client never offers psk_ke; a psk_ke server offers no group the client has.
  auto o = run(make_key(kKeyId, 0x5a), pt::Kex::kPskDhe, pt::Kex::kPskOnly, 0x5a);
  EXPECT_FALSE(o.client_ok || o.server_ok) << "dhe client, ke server";
  // A psk_ke client against a psk_dhe_ke server: the server picks a group; the client refuses.
  o = run(make_key(kKeyId, 0x5a), pt::Kex::kPskOnly, pt::Kex::kPskDhe, 0x5a);
  EXPECT_FALSE(o.client_ok) << "ke client, dhe server";
  EXPECT_NE(o.error.find("the peer used psk_dhe_ke"), std::string::npos) << o.error;
}

TEST(PskTls, SmallParsers) {
  EXPECT_TRUE(kSigpipeIgnored);
  EXPECT_TRUE(pt::is_uuid(kKeyId));
  EXPECT_FALSE(pt::is_uuid("0b6c1f4e-2a7d-4c1e-9f3a-5d8e7b6a4c2"));
  EXPECT_FALSE(pt::is_uuid("0b6c1f4e+2a7d-4c1e-9f3a-5d8e7b6a4c21"));
  EXPECT_FALSE(pt::is_uuid("0b6c1f4e-2a7d-4c1e-9f3a-5d8e7b6a4cz1"));
  EXPECT_EQ(pt::parse_kex("psk_ke"), pt::Kex::kPskOnly);
  EXPECT_EQ(pt::parse_kex("psk_dhe_ke"), pt::Kex::kPskDhe);
  EXPECT_THROW(pt::parse_kex("dhe"), qkdn::InvalidArgument);
}

}  // namespace
