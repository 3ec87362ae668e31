// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The orchestrator's /metrics (Prometheus text format 0.0.4) and /healthz.
// Counters come from Dispatcher::stats(); the two histograms are fed by the
// dispatch observer; worker gauges from WorkerPool::snapshot() at scrape time.

#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <fmt/format.h>

#include <array>
#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace httplib {
class Server;
}

namespace blacktree::orchestrator {

/// A Prometheus histogram with fixed buckets (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

  void observe(double seconds) {
    std::lock_guard lock(mutex_);
    std::size_t i = 0;
    while (i < bounds_.size() && seconds > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += seconds;
    ++count_;
  }

  void render(std::string& out, std::string_view name, std::string_view help) const {
    std::lock_guard lock(mutex_);
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i];
      out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
    }
    out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name, sum_, name,
                       count_);
  }

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

struct Metrics {
  Histogram queue_wait{{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900}};
  Histogram run_duration{{0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}};
  std::atomic<std::uint64_t> events_dropped{0};

  void observe(const core::JobResult& result) {
    using namespace std::chrono;
    const system_clock::time_point unset{};
    if (result.received_at != unset && result.started_at != unset) {
      queue_wait.observe(duration<double>(result.started_at - result.received_at).count());
    }
    if (result.started_at != unset && result.finished_at != unset) {
      run_duration.observe(duration<double>(result.finished_at - result.started_at).count());
    }
  }

  std::string render(const core::DispatcherStats& s, const std::vector<core::WorkerSnapshot>& workers) const {
    std::string out;
    const auto counter = [&out](std::string_view name, std::string_view help, std::uint64_t value) {
      out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, value);
    };
    counter("blacktree_jobs_received_total", "Jobs taken from the queue.", s.received);
    counter("blacktree_jobs_succeeded_total", "Jobs whose final status was success.", s.succeeded);
    counter("blacktree_jobs_failed_total", "Jobs whose final status was failure (lost and invalid included).",
            s.failed);
    counter("blacktree_jobs_lost_total", "Jobs whose worker went away while running them.", s.lost);
    counter("blacktree_jobs_dead_lettered_total", "Invalid messages dead-lettered with a reason.", s.dead_lettered);
    counter("blacktree_jobs_handed_back_total", "Jobs requeued by a graceful stop.", s.handed_back);
    counter("blacktree_offers_not_accepted_total", "Offers a worker refused or never saw.", s.not_accepted);
    counter("blacktree_events_dropped_total", "Progress events dropped because the events path was full.",
            events_dropped.load());
    out += fmt::format("# HELP blacktree_jobs_in_flight Jobs taken and not yet settled.\n"
                       "# TYPE blacktree_jobs_in_flight gauge\nblacktree_jobs_in_flight {}\n",
                       s.in_flight);
    queue_wait.render(out, "blacktree_job_queue_wait_seconds", "From receipt to a worker accepting the job.");
    run_duration.render(out, "blacktree_job_run_duration_seconds", "From a worker accepting the job to its result.");

    std::array<std::uint64_t, 5> by_state{};
    std::uint64_t slots = 0, busy = 0;
    for (const auto& w : workers) {
      ++by_state[static_cast<std::size_t>(w.state)];
      if (w.info && (w.state == core::WorkerState::free || w.state == core::WorkerState::busy)) {
        slots += w.info->capacity;
      }
      busy += w.in_use;
    }
    out += "# HELP blacktree_workers Registered workers by state.\n# TYPE blacktree_workers gauge\n";
    for (auto state : {core::WorkerState::registering, core::WorkerState::free, core::WorkerState::busy,
                       core::WorkerState::draining, core::WorkerState::dead}) {
      out += fmt::format("blacktree_workers{{state=\"{}\"}} {}\n", core::to_string(state),
                         by_state[static_cast<std::size_t>(state)]);
    }
    out += fmt::format("# HELP blacktree_worker_slots Job slots of live workers.\n# TYPE blacktree_worker_slots gauge\n"
                       "blacktree_worker_slots {}\n"
                       "# HELP blacktree_worker_slots_busy Job slots in use.\n"
                       "# TYPE blacktree_worker_slots_busy gauge\nblacktree_worker_slots_busy {}\n",
                       slots, busy);
    return out;
  }
};

/// /healthz and /metrics on their own thread (cpp-httplib).
class OpsServer {
 public:
  using ReadyFn = std::function<std::string()>;  ///< empty: ready; otherwise why not
  using MetricsFn = std::function<std::string()>;

  OpsServer(ReadyFn ready, MetricsFn metrics);
  ~OpsServer();
  /// Binds host:port (port 0 picks one); returns the port, or 0 on failure.
  int start(const std::string& host, int port);
  void stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace blacktree::orchestrator
