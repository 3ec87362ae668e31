// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// A worker's own metrics: a JobRunner that counts what the runner it wraps
// does, and renders it (with the image cache's figures, for a build runner)
// in Prometheus' text format for the worker's /metrics.

#include <blacktree/core/prometheus.hpp>
#include <blacktree/worker/job_runner.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace blacktree::worker {

class BuildPipelineRunner;

/// Counts, per job: its outcome, its duration and each stage's, the bytes of
/// output it streamed, and its build steps cached or built. Thread-safe: jobs
/// run on the worker service's threads while a scrape renders.
class MeteredRunner final : public JobRunner {
 public:
  /// `inner` outlives this; `build`, when given, is `inner` itself or what it
  /// wraps, and adds the image cache's figures.
  explicit MeteredRunner(JobRunner& inner, const BuildPipelineRunner* build = nullptr);

  core::JobResult run(const core::Job& job, const EmitFn& emit, std::stop_token stop) override;
  void after_result(const core::Job& job) noexcept override { inner_.after_result(job); }
  bool immediate() const noexcept override { return inner_.immediate(); }

  /// The exposition text (names blacktree_worker_*).
  std::string render() const;

 private:
  JobRunner& inner_;
  const BuildPipelineRunner* build_;
  std::atomic<std::uint64_t> running_{0};
  std::atomic<std::uint64_t> succeeded_{0};
  std::atomic<std::uint64_t> failed_{0};
  std::atomic<std::uint64_t> cancelled_{0};
  std::atomic<std::uint64_t> log_bytes_{0};
  std::atomic<std::uint64_t> steps_cached_{0};
  std::atomic<std::uint64_t> steps_built_{0};
  core::prometheus::Histogram duration_;
  mutable std::mutex stages_mutex_;
  std::map<std::string, std::unique_ptr<core::prometheus::Histogram>, std::less<>> stages_;
};

}  // namespace blacktree::worker
