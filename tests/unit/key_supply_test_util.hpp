// Shared helpers of the key-supply unit tests: fixed clock, seeded randomness, key ID factories.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/ledger.hpp"
#include "qkdn/controller/relays.hpp"
#include "qkdn/controller/routing.hpp"

namespace qkdn::controller::testing {

using Strings = std::vector<std::string>;

/// The start time of every ManualClock in these tests.
inline const SysTime kT0 = SysTime{std::chrono::seconds{1'700'000'000}};

/// n fresh key IDs (UUIDv4) from rng.
inline Strings fresh_keys(Random& rng, std::size_t n) {
  Strings out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(make_uuid_v4(rng));
  return out;
}

/// A route with the given KMs and links (cost 0).
inline Route route(Strings kms, Strings links) {
  Route r;
  r.kms = std::move(kms);
  r.links = std::move(links);
  return r;
}

/// Sum of every link's counters.
inline LinkCounters sum_counters(const ReservationLedger& ledger) {
  LinkCounters s;
  for (const auto& [link, c] : ledger.all_counters()) {
    s.reserved += c.reserved;
    s.allocated += c.allocated;
    s.consumed += c.consumed;
    s.released += c.released;
  }
  return s;
}

/// Every ledger entry of the output's batches, in order.
inline std::vector<LedgerEntry> entries_of(const RelayOutput& out) {
  std::vector<LedgerEntry> all;
  for (const auto& b : out.ledger) all.insert(all.end(), b.entries.begin(), b.entries.end());
  return all;
}

}  // namespace qkdn::controller::testing
