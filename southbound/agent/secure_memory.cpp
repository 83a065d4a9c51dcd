// Key memory: see qkdn/agent/secure_memory.hpp.
#include "qkdn/agent/secure_memory.hpp"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <openssl/crypto.h>

#include "log.hpp"

namespace qkdn::agent::secure {

namespace {

/// Blocks up to kMaxClass bytes come from kChunk mappings, in power-of-two size classes from
/// kMinClass; bigger blocks get a mapping of their own.
constexpr std::size_t kChunk = std::size_t{1} << 20;
constexpr std::size_t kMinClass = 16;
constexpr std::size_t kMaxClass = std::size_t{1} << 16;
constexpr std::size_t kClasses = 13;  // 16 .. 65536
static_assert(kMinClass << (kClasses - 1) == kMaxClass);

struct FreeBlock {
  FreeBlock* next;
};

struct Arena {
  std::mutex mu;
  std::array<FreeBlock*, kClasses> free{};
  std::uint8_t* bump = nullptr;  // the current chunk's unused tail
  std::size_t left = 0;
  std::unordered_map<void*, bool> large;  // own mapping -> locked
  ArenaStats stats;
};

/// Never destroyed: containers of key material may be freed during static destruction.
Arena& arena() {
  static Arena* a = new Arena;
  return *a;
}

std::atomic<ReleaseObserver> g_observer{nullptr};

void default_warn(const std::string& line) { log_line(LogLevel::kWarn, line); }
std::atomic<Warn> g_warn{&default_warn};

std::size_t class_index(std::size_t n) noexcept {
  std::size_t size = kMinClass;
  std::size_t i = 0;
  while (size < n) {
    size <<= 1;
    ++i;
  }
  return i;
}

std::size_t page_round(std::size_t n) noexcept {
  const std::size_t page = 4096;
  return (n + page - 1) / page * page;
}

/// Maps `bytes` of fresh memory, excluded from core dumps and locked if still permitted.
/// Returns the mapping and whether it is locked. Called with the arena's mutex held.
std::pair<void*, bool> map_pages(Arena& a, std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  ::madvise(p, bytes, MADV_DONTDUMP);
  ++a.stats.chunks;
  bool locked = false;
  if (!a.stats.lock_refused) {
    if (::mlock(p, bytes) == 0) {
      locked = true;
      ++a.stats.locked_chunks;
    } else {
      const int err = errno;
      a.stats.lock_refused = true;
      g_warn.load()(std::string("key memory cannot be locked in RAM (mlock: ") +
                    std::strerror(err) +
                    "); it may be swapped out. Raise RLIMIT_MEMLOCK (LimitMEMLOCK= in the "
                    "systemd unit) to keep keys off swap. Core dumps stay excluded.");
    }
  }
  return {p, locked};
}

void release(void* p, std::size_t n) noexcept {
  OPENSSL_cleanse(p, n);
  if (auto* observe = g_observer.load()) observe(p, n);
}

}  // namespace

std::string disable_core_dumps() noexcept {
  std::string problem;
  const rlimit none{0, 0};
  if (::setrlimit(RLIMIT_CORE, &none) != 0) {
    problem = std::string("setrlimit(RLIMIT_CORE, 0): ") + std::strerror(errno);
  }
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    if (!problem.empty()) problem += "; ";
    problem += std::string("prctl(PR_SET_DUMPABLE, 0): ") + std::strerror(errno);
  }
  return problem;
}

void* allocate(std::size_t n) {
  if (n == 0) n = 1;
  Arena& a = arena();
  std::lock_guard lock(a.mu);
  if (n > kMaxClass) {
    const auto [p, locked] = map_pages(a, page_round(n));
    a.large.emplace(p, locked);
    a.stats.bytes_in_use += n;
    return p;
  }
  const std::size_t i = class_index(n);
  const std::size_t size = kMinClass << i;
  a.stats.bytes_in_use += size;
  if (FreeBlock* b = a.free[i]) {
    a.free[i] = b->next;
    b->next = nullptr;  // the block holds zeros again
    return b;
  }
  if (a.left < size) {  // the tail of the old chunk (< size bytes) stays unused
    a.bump = static_cast<std::uint8_t*>(map_pages(a, kChunk).first);
    a.left = kChunk;
  }
  void* p = a.bump;
  a.bump += size;
  a.left -= size;
  return p;
}

void deallocate(void* p, std::size_t n) noexcept {
  if (p == nullptr) return;
  if (n == 0) n = 1;
  Arena& a = arena();
  release(p, n);
  std::lock_guard lock(a.mu);
  if (n > kMaxClass) {
    const auto it = a.large.find(p);
    if (it != a.large.end()) {
      if (it->second) --a.stats.locked_chunks;
      a.large.erase(it);
    }
    ::munmap(p, page_round(n));  // unlocks too
    --a.stats.chunks;
    a.stats.bytes_in_use -= n;
    return;
  }
  const std::size_t i = class_index(n);
  a.stats.bytes_in_use -= kMinClass << i;
  auto* b = static_cast<FreeBlock*>(p);
  b->next = a.free[i];
  a.free[i] = b;
}

ArenaStats arena_stats() {
  Arena& a = arena();
  std::lock_guard lock(a.mu);
  return a.stats;
}

void set_release_observer(ReleaseObserver observer) noexcept { g_observer.store(observer); }

void set_warning_sink(Warn sink) noexcept { g_warn.store(sink != nullptr ? sink : &default_warn); }

}  // namespace qkdn::agent::secure
