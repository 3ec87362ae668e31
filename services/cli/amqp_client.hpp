// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The few blocking AMQP calls `blacktree submit` makes, on one connection and
// one channel. A short-lived command may block: the orchestrator's adapter
// (blacktree::amqp) is built for long-lived non-blocking use, this is not.
// Every failure comes back as a message a person can act on, never containing
// the broker password.

#include <blacktree/amqp/options.hpp>

#include <chrono>
#include <string>
#include <string_view>

struct amqp_connection_state_t_;  // rabbitmq-c's connection; amqp.h stays in the .cpp

namespace blacktree::cli {

class AmqpClient {
 public:
  AmqpClient() = default;
  ~AmqpClient();
  AmqpClient(const AmqpClient&) = delete;
  AmqpClient& operator=(const AmqpClient&) = delete;

  /// Connects (TLS for amqps), logs in, opens channel 1 with publisher
  /// confirms. `timeout` bounds the connect, the handshake and each RPC.
  /// Returns "" or what went wrong.
  std::string open(const amqp::AmqpEndpoint& endpoint, const amqp::TlsOptions& tls, std::chrono::milliseconds timeout);

  /// Declares `exchange` (topic, durable, as the orchestrator does) and an
  /// exclusive, auto-delete, server-named queue bound to it with
  /// `routing_key`; sets `queue` to its name.
  std::string subscribe(const std::string& exchange, const std::string& routing_key, std::string& queue);

  /// Publishes `body` persistent, application/json, mandatory, and waits up to
  /// `timeout` for the broker's basic.ack. A message no queue takes (the
  /// broker returns it) is an error: it would otherwise be acked and lost.
  std::string publish_confirmed(const std::string& exchange, const std::string& routing_key, std::string_view body,
                                std::chrono::milliseconds timeout);

  /// Starts consuming `queue` (auto-ack: the queue is ours alone and dies with us).
  std::string consume(const std::string& queue);

  enum class Received { message, nothing, failed };
  /// Waits up to `timeout` for the next delivery on the consumed queue.
  /// `message`: `body` holds it; `nothing`: no delivery in time (call again);
  /// `failed`: `error` says why the connection or channel is gone.
  Received next(std::chrono::milliseconds timeout, std::string& body, std::string& error);

  /// Polite close; the broker then deletes the exclusive queue.
  void close() noexcept;

  /// "amqp://host:port/vhost" without credentials.
  const std::string& where() const noexcept { return where_; }

 private:
  void abandon() noexcept;

  amqp_connection_state_t_* state_ = nullptr;
  std::string where_;
};

}  // namespace blacktree::cli
