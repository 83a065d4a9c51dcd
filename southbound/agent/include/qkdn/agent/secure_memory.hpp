// Memory for key material in the agent (issue 13, "key memory").
//
// - disable_core_dumps(): the process never writes a core file (RLIMIT_CORE 0) and is not
//   dumpable (PR_SET_DUMPABLE 0: no core, no ptrace attach by other users, /proc/<pid>/mem closed).
// - SecureAllocator: key buffers (the link key stores, SAE keys waiting for dec_keys, relayed and
//   pre-positioned keys) come from page-aligned chunks marked MADV_DONTDUMP and locked in RAM
//   (mlock) while RLIMIT_MEMLOCK allows; once it does not, one warning is logged and further
//   chunks stay unlocked (still excluded from dumps). Every block is wiped before it is reused
//   or returned, whatever path frees it: destruction, clear(), shrink, a move-assignment or a
//   map entry overwritten (the container frees the old buffer through the allocator).
// Thread-safe (one mutex; the agent's KM strands run on several threads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

namespace qkdn::agent::secure {

/// Turns core dumps off for this process. Returns "" on success, otherwise what failed (the
/// caller logs it once; the agent keeps running).
std::string disable_core_dumps() noexcept;

/// Allocates `n` bytes of key memory (never nullptr; throws std::bad_alloc).
void* allocate(std::size_t n);
/// Wipes and releases a block from allocate(n).
void deallocate(void* p, std::size_t n) noexcept;

/// What the arena holds now.
struct ArenaStats {
  std::size_t chunks = 0;         ///< mappings made (pooled chunks and large blocks)
  std::size_t locked_chunks = 0;  ///< of which mlock succeeded
  std::size_t bytes_in_use = 0;   ///< handed out and not yet released (block sizes)
  bool lock_refused = false;      ///< mlock failed once (the warning was logged)
};
ArenaStats arena_stats();

/// Test hook: called with each block just before it goes back to the pool or the system,
/// after it was wiped (so a check can assert it holds only zeros). nullptr turns it off.
using ReleaseObserver = void (*)(const void* p, std::size_t n);
void set_release_observer(ReleaseObserver observer) noexcept;

/// Where the one "cannot lock key memory" warning goes (default: the agent log at warn level).
using Warn = void (*)(const std::string& line);
void set_warning_sink(Warn sink) noexcept;

/// std::allocator replacement for containers of key material.
template <class T>
struct SecureAllocator {
  using value_type = T;
  using propagate_on_container_move_assignment = std::true_type;
  using is_always_equal = std::true_type;

  SecureAllocator() noexcept = default;
  template <class U>
  SecureAllocator(const SecureAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)

  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(secure::allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { secure::deallocate(p, n * sizeof(T)); }

  template <class U>
  bool operator==(const SecureAllocator<U>&) const noexcept {
    return true;
  }
};

/// A byte buffer of key material.
using Bytes = std::vector<std::uint8_t, SecureAllocator<std::uint8_t>>;

}  // namespace qkdn::agent::secure
