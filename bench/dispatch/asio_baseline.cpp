// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The baseline: asio::thread_pool running the same no-op jobs, each a posted
// handler that runs a no-op and counts its completion. Like the blacktree run,
// every job is queued before the clock starts: the pool's threads are parked
// in a gate handler while the jobs are posted, and the clock runs from opening
// the gate until join() returns (every handler has run).

#include "dispatch.hpp"

#include <asio/post.hpp>
#include <asio/thread_pool.hpp>

#include <atomic>
#include <stdexcept>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace blacktree::bench {
namespace {

// The job itself: nothing, but the compiler may not prove it.
[[gnu::noinline]] void no_op_job(std::size_t index) { asm volatile("" : : "r"(index) : "memory"); }

}  // namespace

Throughput run_asio_baseline(std::size_t jobs, unsigned threads) {
  asio::thread_pool pool(threads);

  std::atomic<bool> open{false};
  std::atomic<unsigned> parked{0};
  for (unsigned t = 0; t < threads; ++t)
    asio::post(pool, [&] {
      parked.fetch_add(1);
      parked.notify_all();
      open.wait(false);
    });
  // Every thread is in a gate handler, so nothing below runs before the clock starts.
  for (unsigned n = parked.load(); n < threads; n = parked.load()) parked.wait(n);

  std::atomic<std::size_t> completed{0};
  for (std::size_t j = 0; j < jobs; ++j)
    asio::post(pool, [&completed, j] {
      no_op_job(j);
      completed.fetch_add(1, std::memory_order_relaxed);
    });

  const auto start = Clock::now();
  open.store(true);
  open.notify_all();
  pool.join();
  const auto stop = Clock::now();

#if defined(__GLIBC__)
  // The run freed millions of small blocks; without this, the next blacktree
  // measurement allocates from them, scattered over a GiB, and runs up to 20%
  // slower than on a fresh heap.
  malloc_trim(0);
#endif
  if (completed.load() != jobs)
    throw std::runtime_error("asio baseline incomplete: " + std::to_string(completed.load()) + " of " +
                             std::to_string(jobs));
  return Throughput{jobs, std::chrono::duration<double>(stop - start).count()};
}

}  // namespace blacktree::bench
