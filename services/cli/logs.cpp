// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// `blacktree logs -f JOBID`: a job's output from the events exchange, from
// the moment it subscribes until the job's result. The exchange is not a log
// store: lines published before are not shown (a finished job's last output
// is in its status's `logs`, on the control plane's status queue).

#include "commands.hpp"
#include "follow.hpp"

#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>

namespace blacktree::cli {

int run_logs(const LogsSettings& s) {
  if (!s.follow) {
    fmt::print(stderr, "blacktree: error: logs needs -f (--follow): the events exchange keeps no history, so "
                       "only the output from now on can be shown\n");
    return exit_usage;
  }
  if (auto valid = wire::check_job_id(s.job_id); !valid) {
    fmt::print(stderr, "blacktree: error: JOBID: {}\n", valid.error().message());
    return exit_usage;
  }
  amqp::AmqpClient client;
  if (const int opened = open_broker(client, s.amqp, s.connect_timeout_s); opened != exit_ok) return opened;
  InterruptsHeld interrupts;
  auto subscribed = subscribe_to_job(client, s.amqp.events_exchange, s.job_id);
  if (!subscribed) {
    fmt::print(stderr, "blacktree: error: {}\n", subscribed.error().message());
    return exit_unreachable;
  }
  fmt::print(stderr, "blacktree: following job {} on {} (exchange {}): its output from now on, until it ends\n",
             s.job_id, client.where(), s.amqp.events_exchange);
  // The output on stdout, as it is what this command is for; the summary on stderr.
  return follow(client, interrupts, *subscribed, s.job_id, s.wait_timeout_s,
                {.lines = stdout, .summary = stderr, .piped = ProgressDisplay::Style::raw});
}

}  // namespace blacktree::cli
