// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/metered_runner.hpp>

#include <blacktree/worker/build_pipeline.hpp>
#include <blacktree/worker/process.hpp>

#include <chrono>
#include <vector>

namespace blacktree::worker {

namespace {
namespace prom = core::prometheus;

// Seconds: a clone or push takes one to minutes, a build up to the job limit.
std::vector<double> duration_bounds() { return {0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}; }

}  // namespace

MeteredRunner::MeteredRunner(JobRunner& inner, const BuildPipelineRunner* build)
    : inner_(inner), build_(build), duration_(duration_bounds()) {}

core::JobResult MeteredRunner::run(const core::Job& job, const EmitFn& emit, std::stop_token stop) {
  running_.fetch_add(1, std::memory_order_relaxed);
  const EmitFn counting = [&](std::string_view stage, std::string_view line) {
    log_bytes_.fetch_add(line.size(), std::memory_order_relaxed);
    if (emit) emit(stage, line);
  };
  const auto started = std::chrono::steady_clock::now();
  auto result = inner_.run(job, counting, stop);
  duration_.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  running_.fetch_sub(1, std::memory_order_relaxed);
  auto& outcome = result.success ? succeeded_ : stop.stop_requested() ? cancelled_ : failed_;
  outcome.fetch_add(1, std::memory_order_relaxed);
  steps_cached_.fetch_add(result.cached_steps, std::memory_order_relaxed);
  steps_built_.fetch_add(result.built_steps, std::memory_order_relaxed);
  std::lock_guard lock(stages_mutex_);
  for (const auto& [stage, took] : result.stage_durations) {
    auto [slot, fresh] = stages_.try_emplace(stage);
    if (fresh) slot->second = std::make_unique<prom::Histogram>(duration_bounds());
    slot->second->observe(std::chrono::duration<double>(took).count());
  }
  return result;
}

std::string MeteredRunner::render() const {
  const auto load = [](const std::atomic<std::uint64_t>& n) { return n.load(std::memory_order_relaxed); };
  prom::TextWriter out;
  out.family("blacktree_worker_jobs_total", "counter", "Jobs this worker ran, by outcome.");
  out.sample("blacktree_worker_jobs_total", {{"outcome", "succeeded"}}, load(succeeded_));
  out.sample("blacktree_worker_jobs_total", {{"outcome", "failed"}}, load(failed_));
  out.sample("blacktree_worker_jobs_total", {{"outcome", "cancelled"}}, load(cancelled_));
  out.gauge("blacktree_worker_jobs_running", "Jobs running now.", load(running_));
  duration_.render(out, "blacktree_worker_job_duration_seconds", "A job's run on this worker, start to result.");
  {
    std::lock_guard lock(stages_mutex_);
    out.family("blacktree_worker_stage_duration_seconds", "histogram",
               "Each stage of a job (cloning, building, pushing for a build).");
    for (const auto& [stage, histogram] : stages_) {
      histogram->render_samples(out, "blacktree_worker_stage_duration_seconds", {"stage", stage});
    }
  }
  out.counter("blacktree_worker_log_bytes_total", "Bytes of job output streamed.", load(log_bytes_));
  out.counter("blacktree_worker_leftover_processes_killed_total",
              "Processes a job's tool left running when it exited, killed (counted under cgroup containment).",
              leftover_processes_killed());
  out.family("blacktree_worker_build_steps_total", "counter", "Build steps, taken from the image cache or run.");
  out.sample("blacktree_worker_build_steps_total", {{"cache", "hit"}}, load(steps_cached_));
  out.sample("blacktree_worker_build_steps_total", {{"cache", "miss"}}, load(steps_built_));
  if (build_ != nullptr) {
    const auto cache = build_->cache_stats();
    out.gauge("blacktree_worker_cache_size_bytes", "The image cache's size, as measured after the last job or prune.",
              cache.size_bytes);
    out.counter("blacktree_worker_cache_prunes_total", "Times the image cache was pruned to fit its budget.",
                cache.prunes);
    out.counter("blacktree_worker_cache_pruned_images_total", "Images those prunes removed.", cache.pruned_images);
  }
  return std::move(out).text();
}

}  // namespace blacktree::worker
