// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// A runner that does nothing and succeeds: for measuring blacktree's own
// overhead (benchmarks) and for checking a deployment's plumbing.

#include <blacktree/worker/job_runner.hpp>

namespace blacktree::worker {

class NoopRunner final : public JobRunner {
 public:
  core::JobResult run(const core::Job& job, const EmitFn& /*emit*/, std::stop_token /*stop*/) override {
    core::JobResult result;
    result.job_id = job.id;
    result.success = true;
    return result;
  }
  bool immediate() const noexcept override { return true; }
};

}  // namespace blacktree::worker
