// Key supply to SAEs at a hosted KM (ETSI GS QKD 014 behind etsi_server.cpp): see sae_keys.hpp.
#include <openssl/crypto.h>

#include "sae_keys.hpp"

namespace qkdn::agent {

SaeKey::~SaeKey() {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

}  // namespace qkdn::agent
