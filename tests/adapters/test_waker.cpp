// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// detail::Waker, the eventfd that wakes the AMQP connection threads and the
// line feeder: notify() writes once until the waiting thread drains, and
// under many notifying threads the waiting one is never left asleep with
// work queued for it.

#include "common/waker.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include <poll.h>
#include <unistd.h>

TEST_CASE("Waker: one write per turn of the waiting thread, and no wake-up lost", "[waker]") {
  blacktree::detail::Waker waker;
  REQUIRE(waker.valid());
  pollfd readable{waker.fd(), POLLIN, 0};

  waker.notify();
  waker.notify();
  waker.notify();
  std::uint64_t count = 0;
  REQUIRE(::read(waker.fd(), &count, sizeof count) == static_cast<ssize_t>(sizeof count));
  CHECK(count == 1);  // three notifies before the thread looked: one write
  waker.drain();      // the thread looks: the next notify writes again
  CHECK(::poll(&readable, 1, 0) == 0);
  waker.notify();
  CHECK(::poll(&readable, 1, 0) == 1);
  waker.drain();
  CHECK(::poll(&readable, 1, 0) == 0);

  // Producers queue under a mutex and notify; the consumer waits on the
  // eventfd, drains, then takes what is queued. A lost wake-up leaves it
  // waiting with items queued: its wait times out and the test fails.
  constexpr int producers = 4;
  constexpr int per_producer = 100000;
  std::mutex mutex;
  std::vector<int> queued;
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p)
    threads.emplace_back([&] {
      for (int i = 0; i < per_producer; ++i) {
        {
          std::lock_guard lock(mutex);
          queued.push_back(i);
        }
        waker.notify();
      }
    });
  int taken = 0;
  bool lost = false;
  while (taken < producers * per_producer) {
    pollfd wait_for{waker.fd(), POLLIN, 0};
    if (::poll(&wait_for, 1, 10000) != 1) {
      lost = true;
      break;
    }
    waker.drain();
    std::lock_guard lock(mutex);
    taken += static_cast<int>(queued.size());
    queued.clear();
  }
  for (auto& thread : threads) thread.join();
  CHECK_FALSE(lost);
  CHECK(taken == producers * per_producer);
}
