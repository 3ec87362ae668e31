// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "follow.hpp"

#include "commands.hpp"

#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace blacktree::cli {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

void print_summary(std::FILE* out, const v1::JobResponse& result, const std::string& job_id,
                   const ProgressDisplay& display) {
  const std::string on_worker = result.worker_id().empty() ? "" : " on worker " + result.worker_id();
  if (result.success()) {
    fmt::print(out, "job {} succeeded{}\n", job_id, on_worker);
    if (!result.image_url().empty()) fmt::print(out, "image:  {}\n", result.image_url());
    if (!result.image_digest().empty()) fmt::print(out, "digest: {}\n", result.image_digest());
  } else {
    // Without progress lines (none published, or all lost) the result's log
    // tail is the only clue to what happened.
    if (display.lines_shown() == 0 && !result.logs().empty()) {
      fmt::print(out, "--- last output of job {} ---\n{}{}", job_id, result.logs(),
                 result.logs().back() == '\n' ? "" : "\n");
    }
    fmt::print(out, "job {} failed{}: {}\n", job_id, on_worker,
               result.error().empty() ? "(no error message)" : result.error());
  }
  std::fflush(out);
}

}  // namespace

InterruptsHeld::InterruptsHeld() {
  sigemptyset(&set_);
  sigaddset(&set_, SIGINT);
  sigaddset(&set_, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &set_, &previous_);
}

InterruptsHeld::~InterruptsHeld() { ::sigprocmask(SIG_SETMASK, &previous_, nullptr); }

int InterruptsHeld::take() {
  const timespec zero{0, 0};
  const int signal_number = ::sigtimedwait(&set_, nullptr, &zero);
  return signal_number > 0 ? signal_number : 0;
}

core::Result<std::string> subscribe_to_job(amqp::AmqpClient& client, const std::string& events_exchange,
                                           const std::string& job_id) {
  auto subscribed = client.subscribe(events_exchange, "job." + job_id);
  if (subscribed || subscribed.error().message().find("406") == std::string::npos) return subscribed;
  return core::Error{subscribed.error().code(), subscribed.error().message() +
                                                   ". It exists with other settings: set --events-exchange to the "
                                                   "orchestrator's events exchange"};
}

int follow(amqp::AmqpClient& client, InterruptsHeld& interrupts, const std::string& queue, const std::string& job_id,
           std::uint32_t timeout_s, const FollowOutput& output) {
  if (auto consuming = client.consume(queue); !consuming) {
    fmt::print(stderr, "blacktree: error: {}; job {} may still be running\n", consuming.error().message(), job_id);
    return exit_unreachable;
  }
  const bool live = ::isatty(::fileno(output.lines)) == 1;
  ProgressDisplay display(output.lines, live ? ProgressDisplay::Style::live : output.piped, job_id);
  const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    if (const int signal_number = interrupts.take(); signal_number != 0) {
      display.finish();
      fmt::print(stderr, "blacktree: stopped following job {}; the job itself keeps running (it was not "
                         "cancelled)\n", job_id);
      return 128 + signal_number;
    }
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left <= milliseconds(0)) {
      display.finish();
      fmt::print(stderr,
                 "blacktree: no result for job {} within {} s (--wait-timeout-s). The job may still be "
                 "running: it was not cancelled, and its final status will reach the control plane's "
                 "status queue.\n",
                 job_id, timeout_s);
      return exit_wait_timeout;
    }
    // Wake every quarter second: a terminal's clock and spinner move, and a
    // pending Ctrl-C is noticed (being blocked, it never interrupts rabbitmq-c mid-frame).
    const auto slice = std::min(left, milliseconds(250));
    auto received = client.next(slice);
    if (!received) {
      display.finish();
      fmt::print(stderr, "blacktree: error: {}; job {} may still be running\n", received.error().message(), job_id);
      return exit_unreachable;
    }
    if (!*received) {
      display.tick();
      continue;
    }
    v1::JobEvent event;
    if (auto read = wire::from_json(**received, event); !read) {
      display.finish();
      fmt::print(stderr, "blacktree: ignoring an event that is not a JobEvent: {}\n", read.error().message());
      continue;
    }
    if (event.job_id() != job_id) continue;  // another job's, through a shared binding
    display.on_event(event);
    if (event.has_result()) {
      display.finish();
      print_summary(output.summary, event.result(), job_id, display);
      return event.result().success() ? exit_ok : exit_job_failed;
    }
  }
}

}  // namespace blacktree::cli
