// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// A closed loop of `concurrency` chains: each chain starts one call, and the
// call's completion (on whatever thread it runs) starts the chain's next call
// until `calls` have been started. Shared by every competitor, so they differ
// only in how a call is made.

#include "bench.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <vector>

namespace blacktree::bench::grpc {

inline double process_cpu_seconds_inline() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto secs = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  return secs(usage.ru_utime) + secs(usage.ru_stime);
}

class ClosedLoop {
 public:
  using Clock = std::chrono::steady_clock;
  /// Starts one call for `chain`; its completion must call finished(chain, ok) once.
  using Start = std::function<void(std::size_t chain)>;

  ClosedLoop(std::size_t concurrency, std::size_t calls)
      : concurrency_(std::max<std::size_t>(1, std::min(concurrency, calls))),
        calls_(calls),
        starts_(concurrency_),
        latencies_(concurrency_) {
    for (auto& l : latencies_) l.reserve(calls / concurrency_ + 1);
  }

  Sample run(Start start) {
    start_ = std::move(start);
    issued_ = concurrency_;
    const double cpu0 = process_cpu_seconds_inline();
    const auto t0 = Clock::now();
    for (std::size_t c = 0; c < concurrency_; ++c) {
      starts_[c] = Clock::now();
      start_(c);
    }
    {
      std::unique_lock lock(mutex_);
      done_cv_.wait(lock, [&] { return chains_done_ == concurrency_; });
    }
    Sample s;
    s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    s.cpu_seconds = process_cpu_seconds_inline() - cpu0;
    s.errors = errors_.load();
    for (auto& l : latencies_) s.latency_us.insert(s.latency_us.end(), l.begin(), l.end());
    return s;
  }

  void finished(std::size_t chain, bool ok) {
    const auto now = Clock::now();
    latencies_[chain].push_back(std::chrono::duration<double, std::micro>(now - starts_[chain]).count());
    if (!ok) errors_.fetch_add(1, std::memory_order_relaxed);
    if (issued_.fetch_add(1) < calls_) {
      starts_[chain] = Clock::now();
      start_(chain);
      return;
    }
    std::lock_guard lock(mutex_);
    if (++chains_done_ == concurrency_) done_cv_.notify_all();
  }

 private:
  const std::size_t concurrency_;
  const std::size_t calls_;
  Start start_;
  std::vector<Clock::time_point> starts_;         // per chain; touched by its one call at a time
  std::vector<std::vector<double>> latencies_;    // per chain, likewise
  std::atomic<std::size_t> issued_{0};
  std::atomic<std::size_t> errors_{0};
  std::mutex mutex_;
  std::condition_variable done_cv_;
  std::size_t chains_done_ = 0;
};

}  // namespace blacktree::bench::grpc
