// Peer input at the agent (issue 13): a peer KM (authenticated, not trusted with the agent's
// memory) and the controller send fields the agent must check before acting. A real agent hosts
// KM2; the test plays KM1 on the KMA link L12 by hand (Hello, Seed with a secret it chose, Mint,
// then Relay frames with valid one-time pads and tags from the keys both ends derive), and plays
// the controller on Ck.
#include <gtest/gtest.h>
#include <poll.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>

#include "agent_test_support.hpp"
#include "kma_wire.hpp"
#include "qkdn/controller/key_limits.hpp"

namespace qkdn::agent::test {
namespace {

namespace json = boost::json;
constexpr std::int64_t kEpoch = 5;

/// KM1's end of the KMA link L12, by hand, over plain TCP (the agent runs --insecure-kma).
class FakePeer {
 public:
  explicit FakePeer(const std::string& endpoint) : socket_(io_) {
    const auto colon = endpoint.rfind(':');
    socket_.connect({net::ip::make_address(endpoint.substr(0, colon)),
                     static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1)))});
  }

  void send(kma::Type type, std::string_view payload) {
    net::write(socket_, net::buffer(kma::encode_frame(type, payload)));
  }
  void send_raw(const std::string& frame) { net::write(socket_, net::buffer(frame)); }

  /// The next frame of `want` (others, e.g. Ping, are skipped); nullopt when the connection
  /// closed or nothing came within the bound.
  std::optional<std::string> expect(kma::Type want, std::chrono::milliseconds bound = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      std::uint8_t head[kma::kHeaderSize];
      if (!read_exact(head, sizeof head, deadline)) return std::nullopt;
      const auto h = kma::decode_header(head);
      std::string payload(h.length, '\0');
      if (h.length > 0 &&
          !read_exact(reinterpret_cast<std::uint8_t*>(payload.data()), h.length, deadline)) {
        return std::nullopt;
      }
      if (h.type == static_cast<std::uint16_t>(want)) return payload;
    }
  }

 private:
  bool read_exact(std::uint8_t* p, std::size_t n, std::chrono::steady_clock::time_point deadline) {
    while (n > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd pfd{socket_.native_handle(), POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
      const auto got = ::recv(socket_.native_handle(), p, n, 0);
      if (got <= 0) return false;
      p += got;
      n -= static_cast<std::size_t>(got);
    }
    return true;
  }

  net::io_context io_;
  tcp::socket socket_;
};

KeyId make_id(std::uint8_t a, std::uint8_t b) {
  KeyId id{};
  id[0] = a;
  id[1] = b;
  id[6] = 0x40;
  id[8] = 0x80;
  return id;
}

std::string hex(const std::uint8_t* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(kHex[p[i] >> 4]);
    out.push_back(kHex[p[i] & 0x0F]);
  }
  return out;
}

std::string str(const json::object& o, std::string_view k) {
  const auto* v = o.if_contains(k);
  return v != nullptr && v->is_string() ? std::string(v->as_string()) : std::string{};
}

/// The hop tag exactly as the sending agent computes it (southbound/agent/key_supply.cpp:
/// relay_aad, hop_tag), with a missing field read as "" as a lenient reader would.
std::array<std::uint8_t, 32> relay_tag(const json::object& meta, const std::string& from,
                                       const std::string& to, const std::vector<std::uint8_t>& pad,
                                       const std::vector<std::uint8_t>& ct) {
  std::string aad = str(meta, "key_relay_request_id") + "\n" + str(meta, "source_kma_id") + "\n" +
                    str(meta, "destination_kma_id") + "\n" + str(meta, "created") + "\n" +
                    str(meta, "encryption") + "\n" + from + "\n" + to;
  if (const auto* ids = meta.if_contains("key_ids"); ids != nullptr && ids->is_array()) {
    for (const auto& id : ids->as_array()) aad += "\n" + std::string(id.as_string());
  }
  if (meta.contains("preposition")) aad += "\npre";
  if (meta.contains("slave_sae")) {
    std::int64_t bits = 0;
    if (const auto* b = meta.if_contains("sae_key_bits"); b != nullptr && b->is_int64()) {
      bits = b->as_int64();
    }
    aad += "\nsae\n" + str(meta, "master_sae") + "\n" + str(meta, "slave_sae") + "\n" +
           str(meta, "session_id") + "\n" + std::to_string(bits);
  }
  static constexpr std::string_view kLabel = "qkdn-relay-mac-v1";
  std::array<std::uint8_t, 32> mac_key{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), pad.data(), static_cast<int>(pad.size()),
       reinterpret_cast<const unsigned char*>(kLabel.data()), kLabel.size(), mac_key.data(), &len);
  std::vector<std::uint8_t> msg(aad.begin(), aad.end());
  msg.push_back(0);
  msg.insert(msg.end(), ct.begin(), ct.end());
  std::array<std::uint8_t, 32> tag{};
  HMAC(EVP_sha256(), mac_key.data(), 32, msg.data(), msg.size(), tag.data(), &len);
  return tag;
}

class AgentPeerInput : public ::testing::Test {
 protected:
  void SetUp() override {
    controller_ = std::make_unique<FakeController>(io_.io, kEpoch);
    agent_ = std::make_unique<Agent>(io_.io, test_config(controller_->port(), {"KM2"}));
    agent_->start();
    ASSERT_TRUE(eventually([&] { return !agent_->kma_endpoint("KM2").empty(); }));
    ASSERT_TRUE(eventually([&] { return controller_->registrations("KM2") > 0; }));
    peer_ = std::make_unique<FakePeer>(agent_->kma_endpoint("KM2"));
    peer_->send(kma::Type::kHello, R"({"from_km":"KM1","to_km":"KM2","link_id":"L12"})");
    ASSERT_TRUE(peer_->expect(kma::Type::kHelloOk));
    // The link secret KM1 (the primary) chose; the test derives the keys as both ends do.
    secure::Bytes secret(kLinkSecretBytes);
    for (std::size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<std::uint8_t>(7 * i);
    mirror_.rekey(secret.data(), {0, 0});
    peer_->send_raw(kma::encode_seed_frame(mirror_));
    ASSERT_TRUE(peer_->expect(kma::Type::kSyncOk));
    // 64 link keys of KM1's half.
    mirror_.mint({64, 0});
    peer_->send_raw(kma::encode_mint_frame(1, {64, 0}));
    ASSERT_TRUE(peer_->expect(kma::Type::kAck));
  }
  void TearDown() override {
    peer_.reset();
    agent_->stop();
    controller_->stop();
    io_.join();
  }

  /// A relay from KM1 to KM2 of `n` end-to-end keys over link keys [first, first + n), with
  /// `edit` applied to the metadata before the tag is computed. Returns the RelayAck response,
  /// or "" when none came (the session died).
  std::string relay(std::size_t first, std::size_t n,
                    const std::function<void(json::object&)>& edit) {
    const std::string rid = "KM1-relay-" + std::to_string(first);
    json::array hop_ids;
    json::array e2e_ids;
    std::vector<std::uint8_t> pad;
    std::vector<std::uint8_t> plain(n * kKeyBytes, 0xA5);
    for (std::size_t i = 0; i < n; ++i) {
      hop_ids.emplace_back(key_id_to_string(mirror_.id_of(0, first + i)));
      e2e_ids.emplace_back(key_id_to_string(make_id(static_cast<std::uint8_t>(first + i), 0xEE)));
      std::array<std::uint8_t, kKeyBytes> bytes{};
      derive_key_bytes(mirror_.secret().data(), 0, first + i, bytes.data());
      pad.insert(pad.end(), bytes.begin(), bytes.end());
    }
    json::object meta{
        {"key_relay_request_id", rid},
        {"source_kma_id", "KM1"},
        {"destination_kma_id", "KM2"},
        {"route", json::array{"KM1", "KM2"}},
        {"hop_keys",
         json::array{json::object{
             {"kma_id", "KM1"}, {"next_kma_id", "KM2"}, {"link_id", "L12"}, {"key_ids", hop_ids}}}},
        {"key_ids", e2e_ids},
        {"key_size", 256},
        {"created", "2026-12-07T10:00:00Z"},
        {"encryption", "otp-xor"},
        {"integrity", "hmac-sha256"},
        {"master_sae", "SAE-A"},
        {"slave_sae", "SAE-X"},
        {"session_id", "3f0c2b9e-7d4a-4c1e-9b8f-0a1b2c3d4e5f"},
        {"sae_key_bits", 256}};
    edit(meta);
    std::vector<std::uint8_t> ct = plain;
    for (std::size_t i = 0; i < ct.size(); ++i) ct[i] ^= pad[i];
    const auto tag = relay_tag(meta, "KM1", "KM2", pad, ct);
    meta["from"] = "KM1";
    meta["to"] = "KM2";
    meta["ciphertext"] = hex(ct.data(), ct.size());
    meta["tag"] = hex(tag.data(), tag.size());
    peer_->send(kma::Type::kRelay, json::serialize(meta));
    auto ack = peer_->expect(kma::Type::kRelayAck);
    if (!ack) return {};
    return std::string(json::parse(*ack).as_object().at("response").as_string());
  }

  IoThreads io_;
  std::unique_ptr<FakeController> controller_;
  std::unique_ptr<Agent> agent_;
  std::unique_ptr<FakePeer> peer_;
  KeyStore mirror_{"L12", "KM1", "KM2", 1 << 20};  ///< KM1's view: IDs and bytes of its keys
};

bool refused(const std::string& response) { return response.rfind("NG: bad_request", 0) == 0; }

// A well-formed relay for an SAE is filed (positive control: the harness's pads and tags are
// right). Then each bad field is refused with NG bad_request and the session lives on: a
// negative sae_key_bits (today: heap bytes before the buffer are zeroed and the session dies
// without an answer), one too large for any key (today: "OK", nothing filed), one not a multiple
// of 8, a missing "created" and a missing "sae_key_bits" beside the SAE pair (today: read as ""
// and 0), and a wrong-typed key_size.
TEST_F(AgentPeerInput, RelayFieldsAreCheckedBeforeUse) {
  EXPECT_EQ(relay(0, 1, [](json::object&) {}), "OK");
  const std::vector<std::pair<std::string, std::function<void(json::object&)>>> bad = {
      {"sae_key_bits too large",
       [](json::object& m) { m["sae_key_bits"] = std::int64_t{1} << 40; }},
      {"sae_key_bits not whole bytes", [](json::object& m) { m["sae_key_bits"] = 255; }},
      {"created missing", [](json::object& m) { m.erase("created"); }},
      {"sae_key_bits missing", [](json::object& m) { m.erase("sae_key_bits"); }},
      {"key_size a string", [](json::object& m) { m["key_size"] = "256"; }},
      {"sae_key_bits negative", [](json::object& m) { m["sae_key_bits"] = -2048; }},
  };
  std::size_t first = 1;
  for (const auto& [name, edit] : bad) {
    const std::string r = relay(first++, 1, edit);
    EXPECT_TRUE(refused(r)) << name << ": got '" << r << "'";
  }
  // Still alive, still answering.
  EXPECT_EQ(relay(first, 1, [](json::object&) {}), "OK");
}

// Ck input from the controller: 0x410C naming more key IDs than one relay may carry, and a relay
// instruction asking for more keys per round than one relay carries, are refused with
// bad_request (today: an unknown_key answer after looking the IDs up, and a silent "OK" that
// relays 1024 keys instead of the number asked for).
TEST_F(AgentPeerInput, ControllerQuantitiesAreBounded) {
  ck::KeyAllocationRequest a;
  a.source_kma_id = "KM2";
  a.destination_kma_id = "KM1";
  a.next_kma_id = "KM1";
  a.controller_epoch = kEpoch;
  for (std::int64_t i = 0; i <= limits::kMaxKeysPerRelay; ++i) {
    KeyId id = make_id(static_cast<std::uint8_t>(i & 0xFF), static_cast<std::uint8_t>(i >> 8));
    a.key_ids.push_back(key_id_to_string(id));
  }
  const auto id = controller_->send_raw("KM2", 0x410C, ck::encode_payload(ck::Message{a}));
  std::optional<ck::KeyAllocationResponse> got;
  ASSERT_TRUE(controller_->wait_for([&](const std::vector<Received>& rs) {
    for (const auto& r : rs) {
      if (r.message_id == id && r.command == 0x140D && r.message) {
        got = std::get<ck::KeyAllocationResponse>(*r.message);
        return true;
      }
    }
    return false;
  }));
  EXPECT_EQ(got->response, 1);
  ASSERT_TRUE(got->extension.has_value());
  EXPECT_NE(got->extension->find("bad_request"), std::string::npos) << *got->extension;

  ck::RelayInstruction ins;
  ins.instruction_id = "3f0c2b9e-7d4a-4c1e-9b8f-0a1b2c3d4e60";
  ins.destination_kma_id = "KM1";
  ins.number_of_keys = limits::kMaxKeysPerInstruction + 1;
  ins.controller_epoch = kEpoch;
  const auto iid = controller_->send_raw("KM2", 0x41E5, ck::encode_payload(ck::Message{ins}));
  std::string response;
  ASSERT_TRUE(controller_->wait_for([&](const std::vector<Received>& rs) {
    for (const auto& r : rs) {
      if (r.message_id == iid && r.command == 0x14E6 && r.message) {
        response = std::get<ck::RelayInstructionResponse>(*r.message).response;
        return true;
      }
    }
    return false;
  }));
  EXPECT_TRUE(response.rfind("NG: bad_request", 0) == 0) << response;
}

}  // namespace
}  // namespace qkdn::agent::test
