// Corpus replay (normal suite, gcc or clang): every committed input of every fuzz target goes
// through that target's fuzz entry, the same function the libFuzzer target calls. The corpus
// holds the seeds and the inputs of past findings (files named crash-*, leak-*, timeout-*), so a
// finding stays fixed. The entries abort on a broken invariant; here each target must also
// accept at least one of its seeds, so that a corpus that no longer reaches the parser's
// success path is noticed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "ck_fuzz_entry.hpp"
#include "etsi_fuzz_entry.hpp"
#include "kma_fuzz_entry.hpp"
#include "northbound_fuzz_entry.hpp"
#include "topology_fuzz_entry.hpp"

namespace {

namespace fs = std::filesystem;

using Entry = std::function<std::size_t(const std::uint8_t*, std::size_t)>;

struct Target {
  const char* name;
  Entry entry;
};

const std::vector<Target>& targets() {
  static const std::vector<Target> t = {
      {"ck", [](const std::uint8_t* d,
                std::size_t n) { return qkdn::southbound::ck::fuzz::ck_fuzz_one(d, n); }},
      {"kma",
       [](const std::uint8_t* d, std::size_t n) {
         return static_cast<std::size_t>(qkdn::fuzz::kma_fuzz_one(d, n));
       }},
      {"etsi",
       [](const std::uint8_t* d, std::size_t n) {
         return static_cast<std::size_t>(qkdn::fuzz::etsi_fuzz_one(d, n));
       }},
      {"topology",
       [](const std::uint8_t* d, std::size_t n) {
         return static_cast<std::size_t>(qkdn::fuzz::topology_fuzz_one(d, n));
       }},
      {"northbound",
       [](const std::uint8_t* d, std::size_t n) {
         return static_cast<std::size_t>(qkdn::fuzz::northbound_fuzz_one(d, n));
       }},
  };
  return t;
}

class CorpusReplay : public ::testing::TestWithParam<std::size_t> {};

// Every file of the target's corpus runs through its entry without a broken invariant, and at
// least one is accepted.
TEST_P(CorpusReplay, EveryInput) {
  const Target& t = targets()[GetParam()];
  const fs::path dir = fs::path(QKDN_FUZZ_CORPUS) / t.name;
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  std::size_t files = 0;
  std::size_t accepted = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    SCOPED_TRACE(e.path().filename().string());
    accepted += t.entry(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    ++files;
  }
  EXPECT_GE(files, 3U) << "corpus of " << t.name << " is (nearly) empty";
  EXPECT_GE(accepted, 1U) << "no input of " << t.name << " reaches the success path";
}

INSTANTIATE_TEST_SUITE_P(Targets, CorpusReplay, ::testing::Range<std::size_t>(0, 5),
                         [](const auto& p) { return std::string(targets()[p.param].name); });

}  // namespace
