// What every fuzz entry shares: a broken invariant prints what broke and aborts, which both the
// libFuzzer targets and the corpus replay test (unit_fuzz_corpus_replay) report.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace qkdn::fuzz {

[[noreturn]] inline void violated(const char* target, const char* what) {
  std::fprintf(stderr, "%s fuzz invariant violated: %s\n", target, what);
  std::abort();
}

}  // namespace qkdn::fuzz
