// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Internal to blacktree's compiled adapters and services (not installed): the
// one eventfd waker. A thread that waits in poll() on its own descriptors
// adds fd(); another thread calls notify() to wake it; the waiting thread
// drain()s. Linux only, as the adapters are.

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

  void notify() noexcept {
    const std::uint64_t one = 1;
    // A full counter (2^64-2 pending wake-ups) still wakes the reader: nothing to handle.
    [[maybe_unused]] auto n = ::write(fd_, &one, sizeof one);
  }
  void drain() noexcept {
    std::uint64_t value = 0;
    [[maybe_unused]] auto n = ::read(fd_, &value, sizeof value);
  }

 private:
  int fd_ = -1;
};

}  // namespace blacktree::detail
