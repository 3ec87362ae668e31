// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// `blacktree jobs`: the jobs the orchestrator holds (waiting for a worker,
// running, their status being published) and with --finished the last ones
// it finished (blacktree.v1.Orchestrator/ListJobs), as a table or as JSON.

#include "admin.hpp"
#include "progress.hpp"

#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

namespace blacktree::cli {
namespace {

std::string state_name(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_WAITING:
      return "waiting";
    case v1::JOB_STATE_RUNNING:
      return "running";
    case v1::JOB_STATE_PUBLISHING:
      return "publishing";
    case v1::JOB_STATE_FINISHED:
      return "finished";
    default:
      return "unknown";
  }
}

// Known once its result is: while its status is published, and after.
std::string outcome(const v1::JobStatus& job) {
  if (job.state() != v1::JOB_STATE_PUBLISHING && job.state() != v1::JOB_STATE_FINISHED) return "-";
  if (job.cancelled()) return "cancelled";
  return job.success() ? "succeeded" : "failed";
}

// 42s, 3m07s, 2h05m, 3d04h: short enough for a column, exact enough to tell jobs apart.
std::string span(std::optional<std::int64_t> seconds) {
  if (!seconds) return "-";
  const std::int64_t s = *seconds;
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{:02}m", s / 3600, s % 3600 / 60);
  return fmt::format("{}d{:02}h", s / 86400, s % 86400 / 3600);
}

void print_table(const v1::ListJobsReply& reply) {
  std::vector<std::vector<std::string>> rows{
      {"JOB ID", "STATE", "WORKER", "PHASE", "AGE", "DURATION", "PRIORITY", "OUTCOME", "LABELS"}};
  // The server's order: in flight (the oldest first), then finished (the newest first).
  for (const auto& job : reply.jobs()) {
    rows.push_back({job.job_id(), state_name(job.state()), job.worker_id().empty() ? "-" : job.worker_id(),
                    job.phase() == v1::PHASE_UNSPECIFIED ? "-" : phase_name(job.phase()),
                    span(seconds_between(job.received_at())),
                    span(seconds_between(job.started_at(), job.finished_at())), std::to_string(job.priority()),
                    outcome(job), labels_text(job.labels())});
  }
  print_columns(rows);
}

}  // namespace

int run_jobs(const JobsSettings& s) {
  v1::ListJobsRequest request;
  request.set_finished(s.finished);
  v1::ListJobsReply reply;
  if (const int called = call_orchestrator(s.orchestrator, "ListJobs",
                                           [&](v1::Orchestrator::Stub& stub, ::grpc::ClientContext& context) {
                                             return stub.ListJobs(&context, request, &reply);
                                           });
      called != exit_ok)
    return called;
  if (s.json) {
    fmt::print("{}\n", wire::to_json(reply));
    return exit_ok;
  }
  print_table(reply);
  if (reply.jobs_size() == 0) {
    fmt::print(stderr, "blacktree: the orchestrator at {} holds no jobs{}\n", s.orchestrator.address,
               s.finished ? " and has finished none lately" : " (--finished also lists the last ones it finished)");
  }
  return exit_ok;
}

}  // namespace blacktree::cli
