// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// `blacktree cancel JOBID`: one cancel request, {"jobId": ..., "reason": ...},
// to the cancel queue, confirmed by the broker. The orchestrator settles the
// job cancelled (waiting, running or not yet arrived) or leaves a finished one
// alone; the job's status on the status queue says which.

#include "commands.hpp"

#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>

namespace blacktree::cli {

int run_cancel(const CancelSettings& s) {
  if (auto valid = wire::check_job_id(s.job_id); !valid) {
    fmt::print(stderr, "blacktree: error: JOBID: {}\n", valid.error().message());
    return exit_usage;
  }
  v1::CancelRequest request;
  request.set_job_id(s.job_id);
  request.set_reason(s.reason);
  const std::string body = wire::to_json(request);
  amqp::AmqpClient client;
  if (const int opened = open_broker(client, s.amqp, s.connect_timeout_s); opened != exit_ok) return opened;
  const auto timeout = std::chrono::seconds(s.connect_timeout_s);
  if (auto published = client.publish_confirmed("", s.amqp.cancel_queue, body, timeout); !published) {
    fmt::print(stderr, "blacktree: error: {}{}\n",
               published.error().with_context("cancel of job " + s.job_id).message(),
               published.error().code() == amqp::errc::unroutable
                   ? "; start the orchestrator first (it declares the queue) or check --cancel-queue"
                   : "");
    return exit_unreachable;
  }
  fmt::print(stderr, "blacktree: cancel of job {} queued on {} (queue {}); the job's status will say cancelled "
                     "unless it had already finished\n",
             s.job_id, client.where(), s.amqp.cancel_queue);
  return exit_ok;
}

}  // namespace blacktree::cli
