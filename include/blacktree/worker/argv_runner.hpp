// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The simplest JobRunner: one configured command run for every job. Useful
// for embedders whose jobs are not container builds, and for testing the
// worker service without git, buildah or a registry.

#include <blacktree/worker/job_runner.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace blacktree::worker {

struct ArgvRunnerConfig {
  /// The command, argv only (no shell). Must not be empty.
  std::vector<std::string> argv;
  /// Extra environment on top of PATH/HOME/LANG (minimal_environment()); the
  /// worker's own environment is not inherited. BLACKTREE_JOB_ID (the job's
  /// id) and BLACKTREE_JOB_PAYLOAD (the job's payload text: a std::string
  /// payload, or a BuildSpec's `payload`) are always set.
  std::map<std::string, std::string, std::less<>> env;
  /// Working directory; empty: the worker's own.
  std::filesystem::path cwd;
  /// Used when Job::timeout is 0; 0 here too means no limit.
  std::chrono::milliseconds default_timeout{std::chrono::minutes(30)};
  /// SIGTERM-to-SIGKILL grace when a job is cancelled or times out.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(3)};
  /// JobResult::logs keeps at most this many bytes of the newest output.
  std::size_t log_tail_bytes = 64 * 1024;
};

/// Runs ArgvRunnerConfig::argv for each job. Success iff it exits with 0; every
/// output line is emitted in stage "building"; on failure `error` says how it
/// ended (exit code, signal, timeout, cancellation). Stateless between jobs and
/// safe to call from several threads at once.
class ArgvRunner final : public JobRunner {
 public:
  explicit ArgvRunner(ArgvRunnerConfig config);

  core::JobResult run(const core::Job& job, const EmitFn& emit, std::stop_token stop) override;

  const ArgvRunnerConfig& config() const noexcept { return config_; }

 private:
  ArgvRunnerConfig config_;
};

}  // namespace blacktree::worker
