// Key combination at a hosted KM (docs/hybrid.md "Key combination"): the destination's check of
// the pair's policy against the frame's offer, the source's combination of the keys it hands to
// the master SAE, and the delivery records. Strand only, like the rest of KmHost.
#include <algorithm>
#include <array>
#include <memory>

#include <openssl/evp.h>
#include <boost/json.hpp>

#include "km_host.hpp"
#include "log.hpp"
#include "qkd_key_meta.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::agent {

namespace {
constexpr std::size_t kMaxDeliveryRecords = 64;
}  // namespace

std::string KmHost::accept_combination(const std::string& master_sae, const std::string& slave_sae,
                                       const std::string& offer_json,
                                       std::optional<hybrid::Shared>& shared,
                                       std::string& answer_json) {
  const auto mode = core_.config().key_combination.of(master_sae, slave_sae);
  const std::string pair = master_sae + ":" + slave_sae;
  if (mode == hybrid::Mode::kQkd) {
    if (offer_json.empty()) return {};
    return "NG: key_combination_mismatch: pair " + pair + " is qkd at " + km_id_ +
           ", the source KM asked for hybrid";
  }
  if (offer_json.empty()) {
    return "NG: key_combination_mismatch: pair " + pair + " is hybrid at " + km_id_ +
           ", the source KM sent no key exchange";
  }
  try {
    boost::system::error_code ec;
    const auto offer = boost::json::parse(offer_json, ec);
    if (ec) return "NG: bad_request: key_combination is not JSON";
    auto r = hybrid::respond(offer);
    answer_json = boost::json::serialize(r.answer);
    shared = std::move(r.shared);
  } catch (const std::exception& e) {
    return std::string("NG: key_combination: ") + e.what();
  }
  return {};
}

bool KmHost::finish_combination(const SupplyWait& w, std::vector<SaeKey>& keys, std::string& why) {
  if (!w.kex) return true;
  if (w.kex_answer.empty()) {
    why = "the destination KM answered without its key exchange";
    return false;
  }
  try {
    boost::system::error_code ec;
    const auto answer = boost::json::parse(w.kex_answer, ec);
    if (ec) {
      why = "the destination's key exchange is not JSON";
      return false;
    }
    const auto shared = w.kex->finish(answer);
    for (auto& k : keys) hybrid::combine(k.bytes, shared, k.key_id, w.master_sae, w.slave_sae);
  } catch (const std::exception& e) {
    why = e.what();
    return false;
  }
  return true;
}

std::string KmHost::ksa_key_check(const std::vector<SaeKey>& keys, const std::string& master_sae,
                                  const std::string& slave_sae) {
  secure::Bytes all;
  std::string text = "qkdn-ksa-check-v1";
  for (const std::string* s : {&master_sae, &slave_sae}) {
    text.push_back('\0');
    text += *s;
  }
  for (const auto& k : keys) {
    all.insert(all.end(), k.bytes.begin(), k.bytes.end());
    text.push_back('\0');
    text += k.key_id;
  }
  std::array<std::uint8_t, 32> mac{};
  hmac_sha256(all, {{reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}}, mac.data());
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (auto b : mac) {
    hex.push_back(kDigits[b >> 4]);
    hex.push_back(kDigits[b & 15]);
  }
  return hex;
}

DeliveryRecord::QkdKeys qkd_key_metadata(const KeyStore& store, const std::vector<KeyBlock>& keys) {
  DeliveryRecord::QkdKeys q;
  q.link_id = store.link_id();
  q.module_id = store.qkd_module_id();
  q.matching_module_id = store.matching_qkd_module_id();
  q.keys = static_cast<std::int64_t>(keys.size());
  q.key_bits = kKeyBits;
  if (keys.empty()) return q;
  q.first_key_id = key_id_to_string(keys.front().id);
  SysTime after = keys.front().created_after;
  SysTime at = keys.front().created;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  static constexpr std::string_view kLabel = "qkdn-qkd-key-hash-v1";
  if (!md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(md.get(), kLabel.data(), kLabel.size()) != 1) {
    throw Internal("SHA-256 unavailable");
  }
  for (const auto& k : keys) {
    after = std::min(after, k.created_after);
    at = std::max(at, k.created);
    EVP_DigestUpdate(md.get(), k.bytes.data(), k.bytes.size());
  }
  std::array<std::uint8_t, 32> digest{};
  unsigned int n = 0;
  EVP_DigestFinal_ex(md.get(), digest.data(), &n);
  q.generated_after = format_rfc3339(after);
  q.generated_at = format_rfc3339(at);
  static constexpr char kDigits[] = "0123456789abcdef";
  for (const auto b : digest) {
    q.hash.push_back(kDigits[b >> 4]);
    q.hash.push_back(kDigits[b & 15]);
  }
  return q;
}

DeliveryRecord KmHost::slave_delivery(const kma::SaeFiling& sae, const std::string& peer_km,
                                      std::string path, const std::optional<hybrid::Shared>& shared,
                                      std::size_t units, std::string first_key_id) {
  const auto per = static_cast<std::size_t>((sae.key_bits + kKeyBits - 1) / kKeyBits);
  DeliveryRecord r;
  r.role = "slave";
  r.master_sae = sae.master_sae;
  r.slave_sae = sae.slave_sae;
  r.peer_km = peer_km;
  r.path = std::move(path);
  r.mode = shared ? "hybrid" : "qkd";
  r.suite = shared ? shared->suite : std::string{};
  r.keys = static_cast<std::int64_t>(units / std::max<std::size_t>(per, 1));
  r.key_bits = sae.key_bits;
  r.first_key_id = std::move(first_key_id);
  r.key_check = "sent";
  return r;
}

void KmHost::record_delivery(DeliveryRecord record) {
  record.time = format_rfc3339(std::chrono::system_clock::now());
  record.wrapped = core_.config().outside_sae_certs.contains(
      record.role == "master" ? record.master_sae : record.slave_sae);
  keys_by_mode_[record.mode] += record.keys;
  keys_by_delivery_[record.wrapped ? "wrapped" : "plain"] += record.keys;
  log_line(LogLevel::kDebug, "KM " + km_id_ + ": delivered " + std::to_string(record.keys) +
                                 " keys " + record.master_sae + "->" + record.slave_sae + " via " +
                                 record.path + " (" + record.mode + ")");
  deliveries_.push_back(std::move(record));
  while (deliveries_.size() > kMaxDeliveryRecords) deliveries_.pop_front();
}

}  // namespace qkdn::agent
