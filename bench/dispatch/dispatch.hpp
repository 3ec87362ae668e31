// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The "dispatch" benchmark problem: push no-op jobs through the core as fast
// as it goes, and compare with asio::thread_pool running the same number of
// no-op handlers, in the same process and run. One file per competing
// implementation (Taskflow's layout):
//
//   blacktree.cpp        Dispatcher + WorkerPool, in-memory queue, loopback transport,
//                        a sink that only counts confirmed statuses
//   asio_baseline.cpp    asio::thread_pool posting the same no-op jobs
//   acquire_latency.cpp  WorkerPool::async_acquire + Lease::release round trips
//   floor.cpp            not a competitor: the same queue and pool under a sketch
//                        of a batched dispatcher (--floor)
//   main.cpp             argv, repetitions, medians, the table and the targets
//
// Every measurement starts with its jobs already queued (the blacktree run
// publishes them to the queue, the baseline posts them behind a gate that
// holds its threads) and stops when the last job's completion is recorded;
// setup and teardown are outside the clock.

#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace blacktree::bench {

using Clock = std::chrono::steady_clock;

/// One throughput measurement.
struct Throughput {
  std::size_t jobs = 0;
  double seconds = 0;
  double jobs_per_second() const { return seconds > 0 ? static_cast<double>(jobs) / seconds : 0; }
};

struct DispatchConfig {
  std::size_t workers = 2;
  std::uint32_t capacity = 1;  ///< slots per worker (WorkerInfo::capacity)
  std::size_t jobs = 0;
  unsigned threads = 2;        ///< threads running the io_context / thread_pool
  /// > 0: a HealthMonitor pings every worker this often during the run (the
  /// loopback transport answers at once), as an orchestrator's does.
  std::chrono::milliseconds ping_interval{0};
  /// DispatcherOptions::max_in_flight (0: the pool's capacity, the default).
  std::size_t max_in_flight = 0;
};

/// Dispatcher<InMemoryQueue, LoopbackTransport, counting sink> with a
/// WorkerPool of `workers` live workers; `jobs` published up front; timed from
/// Dispatcher::start() until the sink holds `jobs` statuses. Throws
/// std::runtime_error if the run does not account for every job.
Throughput run_blacktree(const DispatchConfig& config);

/// A floor for the Dispatcher (floor.cpp): the same InMemoryQueue and
/// WorkerPool and a counting sink under a sketch of a batched dispatcher,
/// jobs in slots of a vector, runs and confirms completed as batches of slot
/// indexes; with `bookkeeping`, also the Dispatcher's per-job records. Timed
/// as run_blacktree; throws std::runtime_error if a job is not accounted for.
Throughput run_floor(const DispatchConfig& config, bool bookkeeping);

/// asio::thread_pool(threads) running `jobs` posted no-op handlers, each of
/// which counts its completion; timed from releasing the gate until join().
Throughput run_asio_baseline(std::size_t jobs, unsigned threads);

/// What a HealthMonitor costs with `workers` loopback workers answering its
/// pings, and nothing else running: the process's CPU time over `rounds`
/// ping intervals, per interval.
struct HealthCost {
  std::size_t workers = 0;
  std::size_t pings = 0;        ///< answered during the measurement
  double cpu_ms_per_round = 0;  ///< process CPU (all threads), ms per interval
  double round_ms = 0;          ///< the interval
};
HealthCost run_health(std::size_t workers, std::chrono::milliseconds interval, std::size_t rounds,
                      unsigned threads);

/// Latency percentiles in nanoseconds.
struct Latency {
  std::size_t samples = 0;
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;
};

/// Free-slot round trip on one thread: async_acquire() on a pool with
/// `workers` live workers (capacity 1), until its handler has run and
/// released the lease. The next acquire starts from that handler.
Latency run_acquire_release(std::size_t workers, std::size_t samples);

/// Hand-off on one thread: every slot is leased and an acquire is waiting;
/// from Lease::release() until the waiting handler runs with the slot.
Latency run_handoff(std::size_t workers, std::size_t samples);

/// "w17": ids and addresses short enough for std::string's small buffer, like
/// real ones ("10.0.0.7:50051").
inline std::string numbered(const char* prefix, std::size_t n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

/// Registers workers "w0".."w<n-1>" at "lo:0".."lo:<n-1>" with `capacity`
/// slots each, and marks them alive. Throws std::runtime_error if the pool refuses one.
inline void add_live_workers(core::WorkerPool& pool, std::size_t workers, std::uint32_t capacity) {
  for (std::size_t i = 0; i < workers; ++i) {
    core::WorkerInfo info;
    info.id = numbered("w", i);
    info.address = numbered("lo:", i);
    info.capacity = capacity;
    const std::string id = info.id;
    if (auto r = pool.register_worker(std::move(info)); !r) throw std::runtime_error(r.error().message());
    if (auto r = pool.mark_alive(id); !r) throw std::runtime_error(r.error().message());
  }
}

/// Publishes jobs "j0".."j<n-1>" to `queue`.
inline void publish_jobs(core::InMemoryQueue& queue, std::size_t jobs) {
  for (std::size_t j = 0; j < jobs; ++j) {
    core::Job job;
    job.id = numbered("j", j);
    queue.publish(std::move(job));
  }
}

/// Nearest-rank percentiles of `ns` (sorted in place).
Latency summarize(std::vector<std::int64_t>& ns);

}  // namespace blacktree::bench
