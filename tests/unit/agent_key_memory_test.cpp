// Key memory (issue 13): every buffer that held key bytes is wiped before it is freed, whatever
// frees it. The custom check: this binary replaces the global operator delete and the key
// arena's release hook with scanners that look for the key pattern in every block being freed.
// A block that still holds it is a key left in freed memory. Before the fix the old buffer of a
// move-assigned SaeKey and of a map entry overwritten by insert_or_assign was freed unwiped.
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <string>
#include <vector>

#include "qkdn/agent/key_store.hpp"
#include "qkdn/agent/secure_memory.hpp"
#include "sae_keys.hpp"

namespace {

/// The key bytes every scenario uses: a pattern no other allocation of this binary holds.
constexpr std::uint8_t kPattern[16] = {0x9E, 0x37, 0x79, 0xB9, 0x7F, 0x4A, 0x7C, 0x15,
                                       0xF3, 0x9C, 0xC0, 0x60, 0x5C, 0xED, 0xC8, 0x34};

std::atomic<bool> g_scanning{false};
std::atomic<int> g_leaks{0};
std::atomic<int> g_arena_releases{0};

bool holds_pattern(const void* p, std::size_t n) noexcept {
  if (p == nullptr || n < sizeof kPattern) return false;
  const auto* b = static_cast<const std::uint8_t*>(p);
  return std::search(b, b + n, std::begin(kPattern), std::end(kPattern)) != b + n;
}

void scan(void* p, std::size_t n) noexcept {
  if (g_scanning.load(std::memory_order_relaxed) && holds_pattern(p, n)) ++g_leaks;
}

/// Fills `n` bytes with repetitions of the pattern.
template <class Bytes>
void fill_key(Bytes& b, std::size_t n) {
  b.resize(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = kPattern[i % sizeof kPattern];
}

/// Counts, over `body`, freed blocks that still held key bytes.
template <class F>
int leaks_during(F body) {
  g_leaks = 0;
  g_scanning = true;
  body();
  g_scanning = false;
  return g_leaks.load();
}

}  // namespace

// The scanners: every heap block freed while a scenario runs is searched for the pattern.
void* operator new(std::size_t n) {
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
namespace {
void scan_and_free(void* p) noexcept {
  if (p != nullptr) scan(p, malloc_usable_size(p));
  std::free(p);
}
}  // namespace
void operator delete(void* p) noexcept { scan_and_free(p); }
void operator delete(void* p, std::size_t) noexcept { scan_and_free(p); }

namespace qkdn::agent {
namespace {

class KeyMemory : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    secure::set_release_observer([](const void* p, std::size_t n) {
      ++g_arena_releases;
      if (g_scanning.load(std::memory_order_relaxed) && holds_pattern(p, n)) ++g_leaks;
      // Wiped means all zeros (a stricter check than "no pattern").
      const auto* b = static_cast<const std::uint8_t*>(p);
      if (g_scanning.load(std::memory_order_relaxed) &&
          std::any_of(b, b + n, [](std::uint8_t c) { return c != 0; })) {
        ++g_leaks;
      }
    });
  }
  static void TearDownTestSuite() { secure::set_release_observer(nullptr); }
};

// Positive control: the scanner sees key bytes in a plain std::vector freed without a wipe.
TEST_F(KeyMemory, ScannerSeesAnUnwipedBuffer) {
  EXPECT_GE(leaks_during([] {
              auto* v = new std::vector<std::uint8_t>();
              fill_key(*v, 64);
              delete v;
            }),
            1);
}

// An SaeKey freed by destruction, by move-assignment over it, by copy-assignment of a larger
// key, and by a vector of keys reallocating or being cleared: no freed block holds key bytes.
TEST_F(KeyMemory, SaeKeyEveryFreePath) {
  EXPECT_EQ(leaks_during([] {
              SaeKey a;
              fill_key(a.bytes, 32);
            }),
            0)
      << "destruction";
  EXPECT_EQ(leaks_during([] {
              SaeKey a;
              fill_key(a.bytes, 32);
              SaeKey b;
              b.bytes.assign(48, 0);
              a = std::move(b);  // a's old buffer is freed here
            }),
            0)
      << "move-assignment";
  EXPECT_EQ(leaks_during([] {
              SaeKey a;
              fill_key(a.bytes, 32);
              SaeKey b;
              b.bytes.assign(4096, 0);
              a = b;  // larger: a's old buffer is reallocated
            }),
            0)
      << "copy-assignment";
  EXPECT_EQ(leaks_during([] {
              std::vector<SaeKey> keys;
              for (int i = 0; i < 40; ++i) {  // reallocations move keys and free old storage
                SaeKey k;
                fill_key(k.bytes, 64);
                keys.push_back(std::move(k));
              }
              keys.clear();
              keys.shrink_to_fit();
            }),
            0)
      << "vector of keys";
}

// A key filed under an ID that is filed again (supplied_.insert_or_assign in sae_supply.cpp does
// this when key IDs repeat): the overwritten entry's buffer is wiped when it is freed.
TEST_F(KeyMemory, MapOverwriteWipesTheOldKey) {
  EXPECT_EQ(leaks_during([] {
              std::map<std::string, SaeKey> filed;
              SaeKey first;
              fill_key(first.bytes, 32);
              filed.insert_or_assign("id", std::move(first));
              SaeKey second;
              second.bytes.assign(32, 0);
              filed.insert_or_assign("id", std::move(second));
              filed.erase("id");
            }),
            0);
}

// The link key store: its secret (the pattern) and the keys derived from it leave no key bytes
// in freed memory through rekeying, takes, trims, clears and destruction (KeyBlock wipes
// itself; the secret lives in the key arena).
TEST_F(KeyMemory, KeyStoreEveryFreePath) {
  EXPECT_EQ(leaks_during([] {
              secure::Bytes secret;
              fill_key(secret, kLinkSecretBytes);
              KeyStore s("L", "A", "B", 1 << 20);
              s.rekey(secret.data(), {0, 0});
              s.mint({64, 64});
              std::vector<KeyId> ids;
              for (std::uint64_t i = 0; i < 8; ++i) ids.push_back(s.id_of(1, i));
              auto taken = s.take(ids, false);
              ASSERT_TRUE(taken.has_value());
              taken.reset();
              const auto r = s.reserve(4, 0, std::chrono::steady_clock::time_point{});
              ASSERT_TRUE(s.allocate(r));
              ASSERT_TRUE(s.take(r, true).has_value());
              ASSERT_TRUE(s.trim_to({32, 32}));
              s.clear();
              s.rekey(secret.data(), {64, 64});  // the old copy of the secret is freed
              KeyStore moved = std::move(s);
              moved.mint({1, 1});
            }),
            0);
}

// Key memory comes from mappings excluded from core dumps; they are locked in RAM when the
// memlock limit allows, otherwise the arena says so (one warning, never an error).
TEST_F(KeyMemory, ArenaLocksOrSaysWhy) {
  static std::atomic<int> warnings{0};
  secure::set_warning_sink([](const std::string&) { ++warnings; });
  std::vector<secure::Bytes> many(8);
  for (auto& b : many) b.assign(std::size_t{1} << 17, 1);  // large blocks: own mappings
  const auto st = secure::arena_stats();
  EXPECT_GE(st.chunks, 8U);
  EXPECT_GE(st.bytes_in_use, std::size_t{8} << 17);
  if (st.lock_refused) {
    EXPECT_EQ(warnings.load(), 1);
  } else {
    EXPECT_GE(st.locked_chunks, 8U);
    EXPECT_EQ(warnings.load(), 0);
  }
  many.clear();
  EXPECT_GT(g_arena_releases.load(), 0);
  secure::set_warning_sink(nullptr);
}

// disable_core_dumps() (called first thing by qkdn-agent's main): RLIMIT_CORE is 0 and the
// process is not dumpable. Run in a child so that this test binary keeps its own settings.
TEST(KeyMemoryProcess, CoreDumpsOff) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const bool ok = secure::disable_core_dumps().empty();
    rlimit lim{};
    ::getrlimit(RLIMIT_CORE, &lim);
    const int dumpable = ::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    ::_exit(ok && lim.rlim_cur == 0 && lim.rlim_max == 0 && dumpable == 0 ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace qkdn::agent
