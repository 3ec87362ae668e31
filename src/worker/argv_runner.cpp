// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/argv_runner.hpp>

#include <blacktree/worker/build_spec.hpp>
#include <blacktree/worker/log.hpp>
#include <blacktree/worker/process.hpp>

#include <fmt/format.h>

#include <exception>

namespace blacktree::worker {

ArgvRunner::ArgvRunner(ArgvRunnerConfig config) : config_(std::move(config)) {}

core::JobResult ArgvRunner::run(const core::Job& job, const EmitFn& emit, std::stop_token stop) {
  core::JobResult result;
  result.job_id = job.id;
  // run() must not throw (it runs on a service thread); anything unexpected
  // becomes a failed result.
  try {
    if (config_.argv.empty()) {
      result.error = "the worker's command is not configured (empty argv)";
      return result;
    }
    ProcessSpec spec;
    spec.argv = config_.argv;
    spec.env = minimal_environment();
    for (const auto& [key, value] : config_.env) spec.env[key] = value;
    spec.env["BLACKTREE_JOB_ID"] = job.id;
    // The payload's text: an embedder's std::string, or a JobRequest's `payload` field.
    const auto* build = job.payload.get<BuildSpec>();
    const auto* text = job.payload.get<std::string>();
    spec.env["BLACKTREE_JOB_PAYLOAD"] = text != nullptr ? *text : build != nullptr ? build->payload : std::string();
    spec.cwd = config_.cwd;
    spec.timeout = job.timeout.count() > 0 ? job.timeout : config_.default_timeout;
    spec.kill_grace = config_.kill_grace;

    Redactor redactor;
    if (build != nullptr) redactor.add(build->github_token.reveal());
    spec.redactor = &redactor;
    LogTail tail(config_.log_tail_bytes);
    if (emit) emit(stage::building, {});
    const auto outcome = run_process(
        spec,
        [&](std::string_view line) {  // redacted by run_process
          tail.append(line);
          if (emit) emit(stage::building, line);
        },
        stop);
    result.logs = tail.text();
    result.success = outcome.ok();
    if (!result.success) result.error = fmt::format("command '{}' {}", config_.argv.front(), outcome.describe());
  } catch (const std::exception& e) {
    result.success = false;
    result.error = fmt::format("internal error running the job: {}", e.what());
  }
  return result;
}

}  // namespace blacktree::worker
