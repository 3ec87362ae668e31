// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// What the HealthMonitor costs: `workers` loopback workers answer its pings,
// nothing else runs; the process's CPU time over a number of ping intervals.

#include "dispatch.hpp"

#include <blacktree/core/health_monitor.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <asio/io_context.hpp>

#include <atomic>
#include <ctime>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace blacktree::bench {

namespace bt = blacktree::core;

namespace {

double process_cpu_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

struct CountingObserver : bt::HealthObserver {
  std::atomic<std::size_t>* answered = nullptr;
  void on_ping_ok(const bt::WorkerInfo&, std::chrono::steady_clock::duration) {
    answered->fetch_add(1, std::memory_order_relaxed);
  }
};

}  // namespace

HealthCost run_health(std::size_t workers, std::chrono::milliseconds interval, std::size_t rounds,
                      unsigned threads) {
  asio::io_context io(static_cast<int>(threads));
  bt::WorkerPool pool(io.get_executor());
  bt::LoopbackTransport transport(io.get_executor());
  for (std::size_t i = 0; i < workers; ++i) transport.add_endpoint(numbered("lo:", i));
  add_live_workers(pool, workers, 1);
  std::atomic<std::size_t> answered{0};
  CountingObserver observer;
  observer.answered = &answered;
  bt::HealthOptions options;
  options.interval = interval;
  options.timeout = interval;
  bt::HealthMonitor<bt::LoopbackTransport, bt::WorkerPool, CountingObserver> monitor(io.get_executor(), transport,
                                                                                      pool, options, observer);
  monitor.start();
  std::vector<std::thread> runners;
  for (unsigned t = 0; t < threads; ++t) runners.emplace_back([&io] { io.run(); });

  std::this_thread::sleep_for(interval);  // the first round, outside the clock
  const double cpu_before = process_cpu_ms();
  const std::size_t answered_before = answered.load();
  std::this_thread::sleep_for(interval * static_cast<std::int64_t>(rounds));  // the clock is what is measured
  const double cpu_after = process_cpu_ms();
  const std::size_t answered_after = answered.load();

  monitor.stop();
  for (auto& t : runners) t.join();
  return HealthCost{workers, answered_after - answered_before, (cpu_after - cpu_before) / static_cast<double>(rounds),
                    static_cast<double>(interval.count())};
}

}  // namespace blacktree::bench
