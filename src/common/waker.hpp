// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Internal to blacktree's compiled adapters and services (not installed): the
// one eventfd waker. A thread that waits in poll() on its own descriptors
// adds fd(); another thread calls notify() to wake it; the waiting thread
// drain()s. Linux only, as the adapters are.

#include <atomic>
#include <cstdint>

#include <sys/eventfd.h>
#include <unistd.h>

namespace blacktree::detail {

class Waker {
 public:
  Waker() noexcept : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  ~Waker() {
    if (fd_ >= 0) ::close(fd_);
  }
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;

  /// False when the kernel refused an eventfd (out of descriptors): the owner
  /// reports that instead of waiting on a descriptor that does not exist.
  bool valid() const noexcept { return fd_ >= 0; }
  int fd() const noexcept { return fd_; }

  /// Writes the eventfd only when no wake-up is pending since the last
  /// drain(): under load the waiting thread is woken once per turn, not once
  /// per thing queued for it. What the caller changed before notify() under
  /// a mutex the waiting thread takes (or in a seq_cst atomic) is seen by the
  /// waiting thread after its next drain(); a plain variable handed over
  /// through notify() alone is not.
  void notify() noexcept {
    if (pending_.exchange(true)) return;  // not read yet: the thread will look
    const std::uint64_t one = 1;
    // A full counter (2^64-2 pending wake-ups) still wakes the reader: nothing to handle.
    [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);
  }
  /// The waiting thread, before it looks at what was queued for it. The
  /// counter is read first and the flag cleared after: a notify() in between
  /// writes nothing, and what it announced is seen by the look that follows.
  void drain() noexcept {
    std::uint64_t value = 0;
    [[maybe_unused]] auto n = ::read(fd_, &value, sizeof value);
    pending_.store(false);
  }

 private:
  int fd_ = -1;
  std::atomic<bool> pending_{false};  // written since the last drain()
};

}  // namespace blacktree::detail
