// Key supply to SAEs at a hosted KM (ETSI GS QKD 014 behind etsi_server.cpp): see sae_keys.hpp.
#include <openssl/crypto.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "km_host.hpp"
#include "sae_keys.hpp"

namespace qkdn::agent {

SaeKey::~SaeKey() {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

// ---- AgentCore: SaeKeyService ----------------------------------------------------------------

SaeLimits AgentCore::limits() const {
  SaeLimits l;
  l.default_key_size = config_.sae_default_key_size;
  l.min_key_size = 64;
  l.max_key_size = config_.sae_max_key_size;
  l.max_key_per_request = config_.sae_max_key_per_request;
  return l;
}

bool AgentCore::serves(const std::string& sae_id) const { return by_sae_.contains(sae_id); }

KmHost* AgentCore::host_of_sae(const std::string& sae_id) const {
  auto it = by_sae_.find(sae_id);
  return it == by_sae_.end() ? nullptr : it->second;
}

net::awaitable<SaeStatus> AgentCore::status(std::string master_sae, std::string slave_sae) {
  KmHost* h = host_of_sae(master_sae);
  if (h == nullptr) {
    SaeStatus s;
    s.status = 401;
    s.message = "SAE " + master_sae + " is not served here";
    co_return s;
  }
  auto op = h->sae_status(std::move(master_sae), std::move(slave_sae));
  auto result = co_await net::co_spawn(h->strand(), std::move(op), net::use_awaitable);
  co_return result;
}

net::awaitable<SaeResult> AgentCore::enc_keys(std::string master_sae, std::string slave_sae,
                                              std::int64_t number, std::int64_t size_bits) {
  KmHost* h = host_of_sae(master_sae);
  if (h == nullptr) {
    SaeResult r;
    r.status = 401;
    r.message = "SAE " + master_sae + " is not served here";
    co_return r;
  }
  auto op = h->sae_enc_keys(std::move(master_sae), std::move(slave_sae), number, size_bits);
  auto result = co_await net::co_spawn(h->strand(), std::move(op), net::use_awaitable);
  co_return result;
}

net::awaitable<SaeResult> AgentCore::dec_keys(std::string slave_sae, std::string master_sae,
                                              std::vector<std::string> key_ids) {
  KmHost* h = host_of_sae(slave_sae);
  if (h == nullptr) {
    SaeResult r;
    r.status = 401;
    r.message = "SAE " + slave_sae + " is not served here";
    co_return r;
  }
  auto op = h->sae_dec_keys(std::move(slave_sae), std::move(master_sae), std::move(key_ids));
  auto result = co_await net::co_spawn(h->strand(), std::move(op), net::use_awaitable);
  co_return result;
}

// ---- KmHost: SAE key supply ------------------------------------------------------------------

net::awaitable<SaeResult> KmHost::sae_enc_keys(std::string, std::string, std::int64_t,
                                               std::int64_t) {
  SaeResult r;
  r.status = 503;
  r.message = "not implemented yet";
  co_return r;
}

net::awaitable<SaeResult> KmHost::sae_dec_keys(std::string, std::string, std::vector<std::string>) {
  SaeResult r;
  r.status = 503;
  r.message = "not implemented yet";
  co_return r;
}

net::awaitable<SaeStatus> KmHost::sae_status(std::string, std::string) {
  SaeStatus s;
  s.status = 503;
  s.message = "not implemented yet";
  co_return s;
}

}  // namespace qkdn::agent
