// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// `blacktree submit`: one JobRequest to execute.queue, confirmed by the broker;
// with --wait, the job's progress from the events exchange. It never reads
// status.queue: that queue's messages belong to the control plane, and taking
// one would steal it.

#include "../common/service.hpp"
#include "commands.hpp"
#include "follow.hpp"

#include <blacktree/amqp/client.hpp>
#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>
#include <blacktree/worker/build_spec.hpp>

#include <fmt/format.h>

#include <array>
#include <optional>
#include <random>

namespace blacktree::cli {
namespace {

using std::chrono::milliseconds;

// The orchestrator's rule (it dead-letters a job that breaks it), which also
// keeps '*' and '#' out of the routing key `job.<id>` that --wait binds to.
core::Result<void> check_job_id(const std::string& id) {
  if (auto valid = wire::check_job_id(id); !valid)
    return core::Error{core::errc::invalid_job, "--job-id: " + valid.error().message()};
  return {};
}

std::string publish_hint(const core::Error& error, const SubmitSettings& s) {
  if (error.code() != amqp::errc::unroutable) return "";
  return s.exchange.empty() ? "; start the orchestrator first (it declares the queue) or check --execute-queue"
                            : "; check --exchange and --execute-queue";
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
  if (s.priority > wire::max_priority) {
    return core::Error{core::errc::invalid_job, "--priority is " + std::to_string(s.priority) + ": it must be 0 to " +
                                                    std::to_string(wire::max_priority) + " (higher runs first)"};
  }
  job.priority = static_cast<std::uint8_t>(s.priority);
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
    auto subscribed = subscribe_to_job(client, s.amqp.events_exchange, job.id);
    if (!subscribed) {
      fmt::print(stderr, "blacktree: error: {}; the job was not submitted\n", subscribed.error().message());
      return exit_unreachable;
    }
    events_queue = std::move(*subscribed);
  }
  if (const int signal_number = interrupts ? interrupts->take() : 0; signal_number != 0) {
    fmt::print(stderr, "blacktree: interrupted: job {} was not submitted\n", job.id);
    return 128 + signal_number;
  }
  // The AMQP priority too, so that a queue declared with x-max-priority delivers higher ones first.
  if (auto published = client.publish_confirmed(s.exchange, s.amqp.execute_queue, wire::job_request_json(job),
                                                rpc_timeout, job.priority);
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
  return follow(client, *interrupts, events_queue, job.id, s.wait_timeout_s,
                {.lines = stderr, .summary = stdout, .piped = ProgressDisplay::Style::tagged});
}

}  // namespace blacktree::cli
