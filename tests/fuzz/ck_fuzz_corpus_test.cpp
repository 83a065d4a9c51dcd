// Deterministic regression run of the Ck fuzz entry: valid messages of every command, framed and
// bare, mutated a few thousand times with a fixed seed. Asserts no crash (the entry aborts on any
// broken invariant) and that every accepted message re-encodes to an equal message.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ck_fuzz_entry.hpp"
#include "codec_samples.hpp"

namespace qkdn::southbound::ck {
namespace {

using Rng = std::mt19937_64;

// Values that stress the validators when they replace a JSON token.
const std::vector<std::string> kTokens = {
    "null",
    "true",
    "-1",
    "0",
    "1",
    "1.5",
    "1e999",
    "-0",
    "4294967296",
    "9223372036854775808",
    "\"\"",
    "\"OK\"",
    "\"NG: x\"",
    "[]",
    "{}",
    "[{}]",
    "\"KM1\"",
    "\"0b5c1a52-7d0e-4c39-9a51-3f1f3b7f0a11\"",
    "\"2026-02-29T00:00:00Z\"",
    "\"h:0\"",
    "\"\\ud800\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"};
const char kBytes[] = {'"', '{',  '}', '[', ']',    ',',    ':',    '0',   '-',
                       'e', '\\', 'a', ' ', '\x00', '\x7f', '\xc3', '\xff'};

std::size_t pick(Rng& rng, std::size_t n) {
  return n == 0 ? 0 : static_cast<std::size_t>(rng() % n);
}

// Replaces the JSON scalar starting after a random ':' or '[' / ',' with a token.
void replace_token(Rng& rng, std::string& s) {
  std::vector<std::size_t> starts;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == ':' || s[i] == '[' || s[i] == ',') starts.push_back(i + 1);
  }
  if (starts.empty()) return;
  const std::size_t at = starts[pick(rng, starts.size())];
  std::size_t end = at;
  if (end < s.size() && s[end] == '"') {
    ++end;
    while (end < s.size() && s[end] != '"') ++end;
    if (end < s.size()) ++end;
  } else {
    while (end < s.size() && s[end] != ',' && s[end] != '}' && s[end] != ']') ++end;
  }
  s.replace(at, end - at, kTokens[pick(rng, kTokens.size())]);
}

std::string mutate(Rng& rng, std::string s, const std::vector<std::string>& pool) {
  const std::size_t rounds = 1 + pick(rng, 4);
  for (std::size_t r = 0; r < rounds; ++r) {
    switch (pick(rng, 8)) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(rng, s.size())] ^= static_cast<char>(1u << pick(rng, 8));
        break;
      case 1:  // overwrite with an interesting byte
        if (!s.empty()) s[pick(rng, s.size())] = kBytes[pick(rng, sizeof kBytes)];
        break;
      case 2:  // insert a byte
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(pick(rng, s.size() + 1)),
                 kBytes[pick(rng, sizeof kBytes)]);
        break;
      case 3: {  // delete a range
        const std::size_t at = pick(rng, s.size() + 1);
        s.erase(at, pick(rng, 16));
        break;
      }
      case 4:  // truncate
        s.resize(pick(rng, s.size() + 1));
        break;
      case 5: {  // splice with another sample
        const std::string& o = pool[pick(rng, pool.size())];
        s = s.substr(0, pick(rng, s.size() + 1)) + o.substr(pick(rng, o.size() + 1));
        break;
      }
      default:  // token replacement (most productive: keeps the JSON well formed)
        replace_token(rng, s);
        break;
    }
  }
  return s;
}

std::size_t run(const std::string& input) {
  return fuzz::ck_fuzz_one(reinterpret_cast<const std::uint8_t*>(input.data()), input.size());
}

// Valid samples are accepted by their own command (sanity of the harness itself).
TEST(CkFuzzCorpus, SeedsAreAccepted) {
  for (const auto& s : testing::all_samples()) {
    EXPECT_GE(run(s.json), 1u) << s.json;
    const std::string framed = encode_frame(Frame{1, s.command, s.json});
    EXPECT_GE(run(std::string(1, '\x07') + framed), 1u);
  }
}

// A few thousand deterministic mutations: no crash, no invariant broken, and enough of them are
// accepted that the re-encode path is really exercised.
TEST(CkFuzzCorpus, MutatedInputs) {
  const auto samples = testing::all_samples();
  std::vector<std::string> pool;
  for (const auto& s : samples) pool.push_back(s.json);
  Rng rng(0x5eed'c0dec);
  std::size_t accepted = 0;
  for (int i = 0; i < 4000; ++i) {
    const auto& seed = samples[pick(rng, samples.size())];
    std::string m = mutate(rng, seed.json, pool);
    if (i % 4 == 0) {  // as a framed stream, sometimes with a second frame behind it
      std::string stream(1, static_cast<char>(pick(rng, 256)));
      stream += encode_frame(
          Frame{static_cast<std::uint32_t>(i), seed.command, m.substr(0, kMaxPayload)});
      if (i % 8 == 0) stream += encode_frame(Frame{1, seed.command, seed.json});
      accepted += run(stream);
    } else {
      accepted += run(m);
    }
  }
  EXPECT_GT(accepted, 500u);
}

// Pure random bytes and degenerate inputs.
TEST(CkFuzzCorpus, RandomBytes) {
  Rng rng(42);
  for (int i = 0; i < 500; ++i) {
    std::string s(pick(rng, 300), '\0');
    for (char& c : s) c = static_cast<char>(rng() & 0xFF);
    run(s);
  }
  run("");
  run(std::string(70000, '{'));
  run(std::string(70000, '['));
  run("{\"kma_id\":\"" + std::string(70000, 'a') + "\"}");
}

}  // namespace
}  // namespace qkdn::southbound::ck
