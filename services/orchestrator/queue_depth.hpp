// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// How many jobs wait in the broker's execute queue: what the orchestrator
// does not hold (it takes only what it can place). Read by a passive declare
// on a connection of its own, at most every `max_age`, for the dashboard and
// /metrics; thread-safe, and never blocks a caller for longer than the
// broker's connect timeout: with several broker addresses (a cluster), each
// try goes to one node, the next one in turn after a failure.

#include <blacktree/amqp/client.hpp>
#include <blacktree/amqp/options.hpp>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>

namespace blacktree::service {

class QueueDepth {
 public:
  struct Reading {
    amqp::AmqpClient::QueueCounts counts;
    std::chrono::system_clock::time_point at;
  };

  QueueDepth(amqp::AmqpOptions options, std::chrono::seconds max_age = std::chrono::seconds(5));

  /// The latest reading no older than max_age (read now if need be), or
  /// nullopt while the broker cannot be asked (the reason: last_error()).
  std::optional<Reading> get();
  std::string last_error() const;
  const std::string& queue() const noexcept { return options_.execute_queue; }

 private:
  amqp::AmqpOptions options_;
  std::chrono::seconds max_age_;
  mutable std::mutex mutex_;
  amqp::AmqpClient client_;  // kept across failures: it knows which node to try next
  bool open_ = false;
  std::optional<Reading> reading_;
  std::chrono::steady_clock::time_point last_try_{};
  std::string error_;
};

}  // namespace blacktree::service
