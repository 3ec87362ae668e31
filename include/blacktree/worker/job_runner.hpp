// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The seam between the worker service (gRPC, capacity, cancellation) and what
// a job actually does. The service calls JobRunner::run on one of its job
// threads (as many as its capacity, started with the first job; see
// immediate() for the exception); the runner blocks until the job is done.
// Nothing here knows about gRPC.

#include <blacktree/core/job.hpp>

#include <functional>
#include <stop_token>
#include <string_view>

namespace blacktree::worker {

/// Reports progress from inside a run: a stage change (line empty) or one line
/// of output in the current stage (BuildPipelineRunner's stages are in
/// build_spec.hpp). May be called from any thread the runner uses, never
/// after run() returned. The service forwards these as RunJob progress
/// events of a core::Phase::running job.
using EmitFn = std::function<void(std::string_view stage, std::string_view line)>;

/// What a worker does with a job.
class JobRunner {
 public:
  virtual ~JobRunner() = default;

  /// Runs `job` to completion and returns its final result (success or a
  /// failure with an error a person can act on). Blocks the calling thread.
  ///  - `stop` is requested when the job is cancelled (Cancel RPC, the
  ///    orchestrator went away, the worker shuts down): the runner then kills
  ///    everything it started and returns promptly with an error saying so.
  ///  - Never throws; every failure is a JobResult with success == false.
  ///  - result.job_id is job.id; the service fills worker_id and timings.
  virtual core::JobResult run(const core::Job& job, const EmitFn& emit, std::stop_token stop) = 0;

  /// Called once the result run() returned for `job` has been handed on (the
  /// service queued it to every caller), on the thread that called run():
  /// what need not delay the result goes here (BuildPipelineRunner removes
  /// the job's directory). A program that calls run() itself calls this
  /// after it has used the result. Never throws. Default: nothing.
  virtual void after_result(const core::Job& job) noexcept { (void)job; }
  /// True when run() returns at once: no I/O, no child process, no wait.
  /// The service then runs the job on the RPC's own thread, as soon as its
  /// `accepted` message is written, instead of handing it to a pool thread
  /// (two thread wake-ups less per job), and starts no job threads. A
  /// runner that wraps another says what the inner one says. A runner that
  /// can block must leave it false: it would hold one of gRPC's callback
  /// threads. Default: false.
  virtual bool immediate() const noexcept { return false; }
};

}  // namespace blacktree::worker
