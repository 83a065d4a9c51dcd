// Small hand-made topologies for the routing tests.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>
#include <utility>

#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/topology.hpp"

namespace qkdn::controller::testing {

/// A document with the given KMs and links {id, a, b}; every link 10 kb/s, QBER 2 %.
inline TopologyDoc make_doc(
    std::initializer_list<std::string> kms,
    std::initializer_list<std::tuple<std::string, std::string, std::string>> links) {
  TopologyDoc doc;
  doc.name = "test";
  for (const auto& km : kms) doc.kms.push_back({km, km});
  for (const auto& [id, a, b] : links) doc.links.push_back({id, a, b, 10'000, 10, 0.02});
  return doc;
}

/// Live state where every link is up with `pool_bits` and the network thresholds are the defaults.
inline LiveState full_pools(std::uint64_t pool_bits = 1'000'000) {
  LiveState live;
  live.defaults.pool_bits = pool_bits;
  return live;
}

}  // namespace qkdn::controller::testing
