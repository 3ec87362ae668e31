// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Where the orchestrator's cancel requests enter (the cancel queue, the
// dashboard): a gate open while a dispatcher runs, and the reader of the
// cancel queue that feeds it.

#include <blacktree/amqp/job_source.hpp>
#include <blacktree/core/dispatcher.hpp>

#include <spdlog/logger.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace blacktree::service {

/// Thread-safe: open while a dispatcher takes cancels, closed before it goes.
class CancelGate {
 public:
  using Done = std::function<void(core::CancelOutcome)>;
  using Fn = std::function<void(std::string job_id, std::string reason, Done done)>;

  void open(Fn fn);
  void close();
  /// False when no dispatcher takes cancels (starting or stopping).
  bool submit(std::string job_id, std::string reason, Done done);

 private:
  std::mutex mutex_;
  Fn fn_;
};

/// Reads the cancel queue into the gate: a request is acked once the
/// dispatcher has it, dead-lettered (with the reason) when it is not one, and
/// handed back while no dispatcher takes it. Keeps itself alive while the
/// source delivers: `std::make_shared<CancelReader>(...)->receive()`.
class CancelReader : public std::enable_shared_from_this<CancelReader> {
 public:
  CancelReader(amqp::AmqpJobSource& source, CancelGate& gate, std::shared_ptr<spdlog::logger> log)
      : source_(source), gate_(gate), log_(std::move(log)) {}

  void receive();

 private:
  void on_request(amqp::AmqpDelivery& delivery);

  amqp::AmqpJobSource& source_;
  CancelGate& gate_;
  std::shared_ptr<spdlog::logger> log_;
};

/// A one-word name of the outcome, for logs: cancelled, stopping, finished, remembered.
std::string_view short_name(core::CancelOutcome outcome) noexcept;

}  // namespace blacktree::service
