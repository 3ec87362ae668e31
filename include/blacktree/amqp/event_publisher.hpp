// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Progress events (phase changes, log lines) and final results, as JSON
// (wire::job_event_json), to the events exchange: best effort and off the
// status path. publish() never blocks: events wait in a bounded buffer for
// the publisher's own connection and thread, and are dropped (and counted)
// when it is full, e.g. while the broker is away.

#include <blacktree/amqp/options.hpp>
#include <blacktree/core/job.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace blacktree::amqp {

namespace detail {
struct PublisherState;
}

struct AmqpEventStats {
  std::uint64_t published = 0;  ///< written to the broker (not confirmed: events are best effort)
  std::uint64_t dropped = 0;    ///< buffer full, lost with a connection, or a routing key over 255 bytes
  std::uint64_t coalesced = 0;  ///< bare phase changes left out: a later event of the job went in the same batch
  std::size_t buffered = 0;     ///< waiting now
  std::uint64_t connects = 0;
  bool connected = false;
};

/// Declares `events_exchange` (durable, `events_exchange_type`) and publishes
/// each event to it, transient (delivery_mode 1), content_type
/// application/json, routing key `events_routing_prefix + job_id`.
/// Subscribers bind their own queues (e.g. `job.#`). Events go out in
/// batches: the first event into an empty buffer waits
/// `events_batch_window` (10 ms) for others, and a bare phase change (no
/// line, no result) is left out of a batch that holds a later event of the
/// same job (counted in `coalesced`): every event carries its phase, so a
/// subscriber still sees each job's latest phase and every line, and a job
/// that is accepted and finishes within one window is one message.
///
/// Thread-safety: every member function may be called from any thread; a
/// ProgressCallback can call publish() directly.
/// Lifetime: stop() (or the destructor) takes no more events, publishes what
/// is buffered if connected (drops it if not), closes the connection and
/// joins the thread.
class AmqpEventPublisher {
 public:
  /// Starts connecting in the background. Throws std::invalid_argument when
  /// `options.url` cannot be parsed.
  explicit AmqpEventPublisher(AmqpOptions options);
  AmqpEventPublisher(const AmqpEventPublisher&) = delete;
  AmqpEventPublisher& operator=(const AmqpEventPublisher&) = delete;
  ~AmqpEventPublisher();

  /// Queues a progress event; returns false when it was dropped (buffer full or stopped).
  bool publish(const core::ProgressEvent& event);
  /// Queues the final event of a job, carrying its result.
  bool publish_result(const core::ProgressEvent& event, const core::JobResult& result);

  void stop();

  bool connected() const noexcept;
  std::string last_error() const;
  AmqpEventStats stats() const;
  /// The broker (no credentials): the node connected now ("amqp://host:5672/"),
  /// or while there is none, every address it tries, comma-separated.
  std::string endpoint() const;

 private:
  bool enqueue(const core::ProgressEvent& event, const core::JobResult* result);

  std::shared_ptr<detail::PublisherState> state_;
};

}  // namespace blacktree::amqp
