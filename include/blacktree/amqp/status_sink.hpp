// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The RabbitMQ status sink: a model of core::StatusSink that publishes the
// seed's JobResponse JSON to status.queue, persistent and with publisher
// confirms, and reports success only once the broker has confirmed.

#include <blacktree/amqp/options.hpp>
#include <blacktree/core/concepts.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/publish_completion.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace blacktree::amqp {

namespace detail {
struct SinkState;
}

struct AmqpSinkStats {
  std::uint64_t published = 0;  ///< handed to the broker
  std::uint64_t confirmed = 0;  ///< confirmed (basic.ack): completed without error
  std::uint64_t failed = 0;     ///< nacked, returned, lost with a connection, or refused while disconnected
  /// Returned by the broker: no queue took it (status.queue deleted, an
  /// exchange that routes nowhere). Also counted in `failed`. Alert when it grows.
  std::uint64_t returned = 0;
  std::uint64_t connects = 0;
  bool connected = false;
};

/// Publishes statuses on a connection and thread of its own, in confirm mode
/// and `mandatory` (delivery_mode 2, content_type application/json, the
/// result's status_id as `message-id`) to `status_exchange` with
/// `effective_status_routing_key()`; declares status_queue (durable).
///
/// async_publish completes without error only when the broker confirmed the
/// message and no queue refused it; with errc::sink_unavailable when it
/// nacked it, returned it (no queue took it: logged once per episode through
/// the options' log function, counted in `returned`), when the connection
/// was lost before the confirm, or at once while disconnected (the
/// Dispatcher retries with backoff and keeps the job unacked meanwhile).
///
/// Thread-safety: every member function may be called from any thread.
/// Lifetime: stop() (or the destructor) fails whatever is unconfirmed with
/// errc::sink_unavailable, closes the connection and joins the thread.
class AmqpStatusSink {
 public:
  /// Starts connecting in the background. Throws std::invalid_argument when
  /// `options.url` cannot be parsed.
  AmqpStatusSink(asio::any_io_executor executor, AmqpOptions options);
  AmqpStatusSink(const AmqpStatusSink&) = delete;
  AmqpStatusSink& operator=(const AmqpStatusSink&) = delete;
  ~AmqpStatusSink();

  /// Completion: `void(std::error_code)`, on the handler's associated
  /// executor (else the sink's). `result` is serialised before this returns.
  template <class Token>
  auto async_publish(const core::JobResult& result, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this, &result](auto handler) {
          const core::JobResult* const one = &result;
          std::vector<core::PublishCompletion> completion;
          completion.emplace_back(core::PublishCompletion::Single(std::move(handler), executor_));
          start_publish({&one, 1}, std::move(completion));
        },
        token);
  }

  /// It publishes batches (core::PublishesBatches): declared, so that a
  /// misspelt async_publish_some is a compile error.
  static constexpr bool publishes_batches = true;

  /// Each status as async_publish, handed to the connection thread in one
  /// go (one wake-up, and the broker's confirms come with `multiple`).
  /// Completion: `void(std::vector<std::error_code>)`, one code per status,
  /// once every one is confirmed or failed. Serialised before this returns.
  template <class Token>
  auto async_publish_some(std::span<const core::JobResult* const> results, Token&& token) {
    return asio::async_initiate<Token, void(std::vector<std::error_code>)>(
        [this, results](auto handler) {
          core::PublishCompletion::Batch batch(std::move(handler), executor_);
          if (results.empty()) {
            batch.complete({});
            return;
          }
          start_publish(results, core::PublishCompletion::batch(results.size(), std::move(batch)));
        },
        token);
  }

  /// Stops and joins the thread; idempotent. Blocks the caller while the
  /// connection closes (at most connect_timeout when the broker does not answer).
  void stop();

  /// True while a connection with a channel in confirm mode is established (for /healthz).
  bool connected() const noexcept;
  /// The last connection or publish problem, for a person; empty if none yet.
  std::string last_error() const;
  AmqpSinkStats stats() const;
  /// The broker (no credentials): the node connected now ("amqp://host:5672/"),
  /// or while there is none, every address it tries, comma-separated.
  std::string endpoint() const;

 private:
  // One completion per status, in order.
  void start_publish(std::span<const core::JobResult* const> results, std::vector<core::PublishCompletion> completions);

  asio::any_io_executor executor_;
  std::shared_ptr<detail::SinkState> state_;
};

static_assert(core::StatusSink<AmqpStatusSink> && core::PublishesBatches<AmqpStatusSink>);

}  // namespace blacktree::amqp
