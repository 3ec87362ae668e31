// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// `blacktree submit`: one JobRequest to execute.queue, confirmed by the broker;
// with --wait, the job's progress from the events exchange. It never reads
// status.queue: that queue's messages belong to the control plane, and taking
// one would steal it.

#include "../common/service.hpp"
#include "commands.hpp"
#include "progress.hpp"

#include <blacktree/amqp/client.hpp>
#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>
#include <blacktree/worker/build_spec.hpp>

#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

#include <array>
#include <optional>
#include <random>

namespace blacktree::cli {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// The orchestrator's rule (it dead-letters a job that breaks it), which also
// keeps '*' and '#' out of the routing key `job.<id>` that --wait binds to.
core::Result<void> check_job_id(const std::string& id) {
  if (auto valid = wire::check_job_id(id); !valid)
    return core::Error{core::errc::invalid_job, "--job-id: " + valid.error().message()};
  return {};
}

void print_summary(const v1::JobResponse& result, const std::string& job_id, const ProgressDisplay& display) {
  const std::string on_worker = result.worker_id().empty() ? "" : " on worker " + result.worker_id();
  if (result.success()) {
    fmt::print("job {} succeeded{}\n", job_id, on_worker);
    if (!result.image_url().empty()) fmt::print("image:  {}\n", result.image_url());
    if (!result.image_digest().empty()) fmt::print("digest: {}\n", result.image_digest());
  } else {
    // Without progress lines (none published, or all lost) the result's log
    // tail is the only clue to what happened.
    if (display.lines_shown() == 0 && !result.logs().empty()) {
      fmt::print("--- last output of job {} ---\n{}{}", job_id, result.logs(),
                 result.logs().back() == '\n' ? "" : "\n");
    }
    fmt::print("job {} failed{}: {}\n", job_id, on_worker,
               result.error().empty() ? "(no error message)" : result.error());
  }
  std::fflush(stdout);
}

// Ctrl-C (or SIGTERM) while following a job: held pending while blocked, so
// the wait loop can pick it up between slices, tidy the terminal and say that
// the job itself goes on. No handler, so no global flag.
class InterruptsHeld {
 public:
  InterruptsHeld() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    ::sigprocmask(SIG_BLOCK, &set_, &previous_);
  }
  ~InterruptsHeld() { ::sigprocmask(SIG_SETMASK, &previous_, nullptr); }
  InterruptsHeld(const InterruptsHeld&) = delete;
  InterruptsHeld& operator=(const InterruptsHeld&) = delete;

  /// The pending SIGINT/SIGTERM, taken; 0 when none.
  int take() {
    const timespec zero{0, 0};
    const int signal_number = ::sigtimedwait(&set_, nullptr, &zero);
    return signal_number > 0 ? signal_number : 0;
  }

 private:
  sigset_t set_{};
  sigset_t previous_{};
};

std::string publish_hint(const core::Error& error, const SubmitSettings& s) {
  if (error.code() != amqp::errc::unroutable) return "";
  return s.exchange.empty() ? "; start the orchestrator first (it declares the queue) or check --execute-queue"
                            : "; check --exchange and --execute-queue";
}

int follow(amqp::AmqpClient& client, InterruptsHeld& interrupts, const std::string& queue, const std::string& job_id,
           std::uint32_t timeout_s) {
  if (auto consuming = client.consume(queue); !consuming) {
    fmt::print(stderr, "blacktree: error: {}; job {} was queued and may still run\n", consuming.error().message(),
               job_id);
    return exit_unreachable;
  }
  const bool live = ::isatty(STDERR_FILENO) == 1;
  ProgressDisplay display(stderr, live, job_id);
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
      fmt::print(stderr, "blacktree: error: {}; job {} was queued and may still run\n", received.error().message(),
                 job_id);
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
      print_summary(event.result(), job_id, display);
      return event.result().success() ? exit_ok : exit_job_failed;
    }
  }
}

}  // namespace

std::string random_uuid_v4() {
  std::random_device device;
  std::array<unsigned char, 16> bytes{};
  for (auto& b : bytes) b = static_cast<unsigned char>(device() & 0xff);
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);  // version 4
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += fmt::format("{:02x}", bytes[i]);
  }
  return out;
}

core::Result<core::Job> build_job(const SubmitSettings& s) {
  core::Job job;
  job.id = s.job_id.empty() ? random_uuid_v4() : s.job_id;
  if (auto checked = check_job_id(job.id); !checked) return std::move(checked).error();
  for (const auto& [flag, value] : {std::pair<const char*, const std::string&>{"--repo", s.repo},
                                    {"--branch", s.branch},
                                    {"--image", s.image}}) {
    if (value.empty()) return core::Error{core::errc::invalid_job, std::string(flag) + " must not be empty"};
  }
  job.payload = core::Payload(worker::BuildSpec{s.repo, s.branch, s.dockerfile, s.context, s.image, s.token, {}});
  auto labels = service::parse_labels(s.labels);
  if (!labels) return core::Error{core::errc::invalid_job, labels.error().message()};
  job.required_labels = std::move(*labels);
  if (!s.region.empty()) {
    const auto it = job.required_labels.find("region");
    if (it != job.required_labels.end() && it->second != s.region)
      return core::Error{core::errc::invalid_job, "--region " + s.region + " contradicts --label region=" + it->second};
    job.required_labels.insert_or_assign("region", s.region);
  }
  job.timeout = std::chrono::seconds(s.timeout_s);
  return job;
}

int run_submit(const SubmitSettings& s) {
  auto built = build_job(s);
  if (!built) {
    fmt::print(stderr, "blacktree: error: {}\n", built.error().message());
    return exit_usage;
  }
  const core::Job& job = *built;

  const milliseconds rpc_timeout = std::chrono::seconds(s.connect_timeout_s);
  amqp::AmqpClient client;
  if (const int opened = open_broker(client, s.amqp, s.connect_timeout_s); opened != exit_ok) return opened;
  // Subscribe before publishing: the orchestrator may publish the first
  // events before we could otherwise have bound a queue, and they would be lost.
  std::string events_queue;
  // Held from here, so that once the job is published an interrupt always
  // gets the "keeps running" message (it waits at most for the broker's confirm).
  std::optional<InterruptsHeld> interrupts;
  if (s.wait) {
    interrupts.emplace();
    auto subscribed = client.subscribe(s.amqp.events_exchange, "job." + job.id);
    if (!subscribed) {
      const std::string error = subscribed.error().message();
      fmt::print(stderr, "blacktree: error: {}{}; the job was not submitted\n", error,
                 error.find("406") != std::string::npos
                     ? ". It exists with other settings: set --events-exchange to the orchestrator's events exchange"
                     : "");
      return exit_unreachable;
    }
    events_queue = std::move(*subscribed);
  }
  if (const int signal_number = interrupts ? interrupts->take() : 0; signal_number != 0) {
    fmt::print(stderr, "blacktree: interrupted: job {} was not submitted\n", job.id);
    return 128 + signal_number;
  }
  if (auto published =
          client.publish_confirmed(s.exchange, s.amqp.execute_queue, wire::job_request_json(job), rpc_timeout);
      !published) {
    fmt::print(stderr, "blacktree: error: {}{}\n", published.error().with_context("job " + job.id).message(),
               publish_hint(published.error(), s));
    return exit_unreachable;
  }
  // The id alone on stdout, so `id=$(blacktree submit ...)` works; the rest on stderr.
  fmt::print("{}\n", job.id);
  std::fflush(stdout);
  fmt::print(stderr, "blacktree: job {} queued on {} ({}{})\n", job.id, client.where(),
             s.exchange.empty() ? "queue " + s.amqp.execute_queue
                                : "exchange " + s.exchange + ", key " + s.amqp.execute_queue,
             s.token.empty() ? ", no GitHub token" : ", with a GitHub token");
  if (!s.wait) return exit_ok;
  return follow(client, *interrupts, events_queue, job.id, s.wait_timeout_s);
}

}  // namespace blacktree::cli
