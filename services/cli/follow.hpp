// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Following one job on the events exchange until its result: what
// `blacktree submit --wait` and `blacktree logs -f` share. The exchange is
// not a log store: a subscriber sees the events published after it bound its
// queue, nothing earlier.

#include "progress.hpp"

#include <blacktree/amqp/client.hpp>
#include <blacktree/core/result.hpp>

#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace blacktree::cli {

/// Ctrl-C (or SIGTERM) while following a job: held pending while blocked, so
/// the wait loop can pick it up between slices, tidy the terminal and say that
/// the job itself goes on. No handler, so no global flag.
class InterruptsHeld {
 public:
  InterruptsHeld();
  ~InterruptsHeld();
  InterruptsHeld(const InterruptsHeld&) = delete;
  InterruptsHeld& operator=(const InterruptsHeld&) = delete;

  /// The pending SIGINT/SIGTERM, taken; 0 when none.
  int take();

 private:
  sigset_t set_{};
  sigset_t previous_{};
};

/// Binds a private queue to `job_id`'s events (routing key `job.<id>`) on
/// `events_exchange`: the queue's name, or an error saying which flag to look at.
core::Result<std::string> subscribe_to_job(amqp::AmqpClient& client, const std::string& events_exchange,
                                           const std::string& job_id);

/// Where follow() writes.
struct FollowOutput {
  std::FILE* lines;                ///< the job's output (and on a terminal the live phase line)
  std::FILE* summary;              ///< the result: succeeded or failed, image, digest, error
  ProgressDisplay::Style piped;    ///< how `lines` shows the output when it is not a terminal
};

/// Consumes `queue` (from subscribe_to_job) and shows `job_id`'s events until
/// its result, for at most `timeout_s` (--wait-timeout-s). Returns the exit
/// code: exit_ok (it succeeded), exit_job_failed, exit_unreachable,
/// exit_wait_timeout, or 128 + signal when interrupted.
int follow(amqp::AmqpClient& client, InterruptsHeld& interrupts, const std::string& queue, const std::string& job_id,
           std::uint32_t timeout_s, const FollowOutput& output);

}  // namespace blacktree::cli
