// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// WorkerPool alone: how long leasing and returning a slot takes, as the
// dispatcher does it once per job. One thread runs the io_context, so the
// figures are the pool's own cost plus one asio post, with no contention.
// Each sample is bracketed by two steady_clock::now() calls (their cost, about
// 20-30 ns on Linux, is included).

#include "dispatch.hpp"

#include <blacktree/core/worker_pool.hpp>

#include <asio/io_context.hpp>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>
#include <system_error>

namespace blacktree::bench {
namespace {

namespace bt = blacktree::core;

std::int64_t since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
}

// Samples taken before measuring: warms caches, the allocator and asio's
// handler recycling; not recorded.
constexpr std::size_t warmup = 10'000;

// acquire -> (post) -> handler -> release; the handler starts the next one.
struct RoundTrip {
  bt::WorkerPool& pool;
  std::vector<std::int64_t>& out;
  std::size_t total;
  std::size_t done = 0;
  Clock::time_point t0{};

  void next() {
    t0 = Clock::now();
    pool.async_acquire({}, [this](std::error_code ec, bt::WorkerPool::Lease lease) {
      if (ec) throw std::system_error(ec, "async_acquire");
      lease.release();
      const auto ns = since(t0);
      if (done >= warmup) out.push_back(ns);
      if (++done < total) next();
    });
  }
};

// Every slot leased; acquire (it waits), then release one lease: the slot
// goes straight to the waiter. Measures release() -> waiting handler.
struct HandOff {
  bt::WorkerPool& pool;
  std::vector<bt::WorkerPool::Lease>& held;
  std::vector<std::int64_t>& out;
  std::size_t total;
  std::size_t done = 0;
  Clock::time_point t0{};

  void next() {
    const std::size_t slot = done % held.size();
    pool.async_acquire({}, [this, slot](std::error_code ec, bt::WorkerPool::Lease lease) {
      if (ec) throw std::system_error(ec, "async_acquire");
      const auto ns = since(t0);
      held[slot] = std::move(lease);
      if (done >= warmup) out.push_back(ns);
      if (++done < total) next();
    });
    t0 = Clock::now();
    held[slot].release();
  }
};

}  // namespace

Latency run_acquire_release(std::size_t workers, std::size_t samples) {
  asio::io_context io(1);
  bt::WorkerPool pool(io.get_executor());
  add_live_workers(pool, workers, 1);
  std::vector<std::int64_t> ns;
  ns.reserve(samples);
  RoundTrip loop{pool, ns, samples + warmup};
  loop.next();
  io.run();
  return summarize(ns);
}

Latency run_handoff(std::size_t workers, std::size_t samples) {
  asio::io_context io(1);
  bt::WorkerPool pool(io.get_executor());
  add_live_workers(pool, workers, 1);
  std::vector<bt::WorkerPool::Lease> held(workers);
  for (std::size_t i = 0; i < workers; ++i)
    pool.async_acquire({}, [&held, i](std::error_code ec, bt::WorkerPool::Lease lease) {
      if (ec) throw std::system_error(ec, "async_acquire");
      held[i] = std::move(lease);
    });
  io.run();
  io.restart();
  if (pool.alive_capacity() != workers || pool.waiting() != 0) throw std::logic_error("hand-off setup");
  std::vector<std::int64_t> ns;
  ns.reserve(samples);
  HandOff loop{pool, held, ns, samples + warmup};
  loop.next();
  io.run();
  held.clear();
  return summarize(ns);
}

Latency summarize(std::vector<std::int64_t>& ns) {
  Latency l;
  l.samples = ns.size();
  if (ns.empty()) return l;
  std::sort(ns.begin(), ns.end());
  auto rank = [&](double p) {
    // Nearest rank: the smallest value with at least p of the samples at or below it.
    auto k = static_cast<std::size_t>(p * static_cast<double>(ns.size()) + 0.999999);
    return static_cast<double>(ns[std::clamp<std::size_t>(k, 1, ns.size()) - 1]);
  };
  l.p50 = rank(0.50);
  l.p90 = rank(0.90);
  l.p99 = rank(0.99);
  l.p999 = rank(0.999);
  l.max = static_cast<double>(ns.back());
  l.mean = std::accumulate(ns.begin(), ns.end(), 0.0) / static_cast<double>(ns.size());
  return l;
}

}  // namespace blacktree::bench
