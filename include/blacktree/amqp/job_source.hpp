// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The RabbitMQ job source: a model of core::JobSource that consumes the
// seed's JobRequest JSON from execute.queue with manual acks and a prefetch
// that follows the dispatcher's capacity.
//
//   asio::io_context io;
//   blacktree::amqp::AmqpOptions options;
//   options.url = std::getenv("MQ_URL");
//   blacktree::amqp::AmqpJobSource source(io.get_executor(), options);
//   blacktree::amqp::AmqpStatusSink sink(io.get_executor(), options);
//   blacktree::core::Dispatcher dispatcher(io.get_executor(), source, transport, sink, pool);
//   dispatcher.start();
//   ...  // on SIGTERM:
//   source.cancel_consumer();
//   dispatcher.async_stop(deadline, [&](std::error_code) { source.stop(); sink.stop(); });

#include <blacktree/amqp/options.hpp>
#include <blacktree/core/completion_handler.hpp>
#include <blacktree/core/concepts.hpp>
#include <blacktree/core/job.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace blacktree::amqp {

namespace detail {
struct SourceState;
}

/// One message taken from execute.queue and not yet settled (models core::Delivery).
///
/// Settle it with the source's ack() or reject(). One destroyed unsettled is
/// requeued (basic.reject with requeue), so the broker delivers it again,
/// marked redelivered. If the connection it came on is gone, settling it does
/// nothing: the broker already took it back and will redeliver it.
/// Move-only; not thread-safe itself (settle each delivery from one place),
/// but deliveries may be settled and destroyed on any thread.
class AmqpDelivery {
 public:
  /// It can tell an invalid message (core::ReportsInvalid): declared, so that
  /// a misspelt invalid_reason fails to compile instead of going unused.
  static constexpr bool reports_invalid = true;

  AmqpDelivery() = default;
  AmqpDelivery(AmqpDelivery&& other) noexcept = default;
  AmqpDelivery& operator=(AmqpDelivery&& other) noexcept;
  AmqpDelivery(const AmqpDelivery&) = delete;
  AmqpDelivery& operator=(const AmqpDelivery&) = delete;
  ~AmqpDelivery();

  /// The parsed job; `job().redelivered` is the broker's redelivered flag.
  /// When the message is invalid, holds whatever could be read (maybe just the id).
  const core::Job& job() const noexcept { return job_; }
  /// Non-empty when the message is not a valid JobRequest (bad JSON, missing field).
  std::string_view invalid_reason() const noexcept { return invalid_reason_; }
  /// The message as it arrived.
  std::string_view body() const noexcept { return body_; }
  std::uint64_t delivery_tag() const noexcept { return delivery_tag_; }
  /// Which connection of the source it came on; settling is ignored once that one is gone.
  std::uint64_t generation() const noexcept { return generation_; }
  /// False once acked or rejected (or for a default-constructed delivery).
  bool pending() const noexcept { return state_ != nullptr; }

 private:
  friend class AmqpJobSource;
  friend struct detail::SourceState;
  void hand_back() noexcept;

  std::shared_ptr<detail::SourceState> state_;  // null once settled
  core::Job job_;
  std::string invalid_reason_;
  std::string body_;
  std::string exchange_;
  std::string routing_key_;
  std::string content_type_;
  std::uint64_t delivery_tag_ = 0;
  std::uint64_t generation_ = 0;
};

/// Counters for logs and /metrics. Monotonic except `connected`.
struct AmqpSourceStats {
  std::uint64_t delivered = 0;      ///< messages received from the broker
  std::uint64_t acked = 0;
  std::uint64_t ack_frames = 0;     ///< basic.ack frames those took (one multiple ack settles a run of them)
  std::uint64_t requeued = 0;       ///< rejected with requeue, or dropped unsettled
  std::uint64_t dead_lettered = 0;  ///< confirmed on the dead-letter exchange and acked
  /// Dead letters the broker returned (no queue bound to the dead-letter
  /// exchange): published again with backoff, the original held. Alert when it grows.
  std::uint64_t dead_letters_returned = 0;
  std::uint64_t too_large = 0;      ///< over max_message_size: handed on invalid, without their body
  std::uint64_t connects = 0;       ///< connections established (the first one included)
  std::size_t prefetch = 0;         ///< the last set_prefetch value
  bool connected = false;
};

/// Deliveries handed out on a connection that has since been lost: the
/// broker took them back and may deliver them again, here or to another
/// consumer, while their jobs go on here. See AmqpJobSource::lost_deliveries.
struct LostDeliveries {
  std::vector<std::string> running;  ///< job ids of those not settled yet
  std::vector<std::string> settled;  ///< job ids of those acked since (their statuses are out)
};

/// Consumes execute.queue on a connection and thread of its own (rabbitmq-c
/// is blocking; nothing here ever blocks the caller or an asio thread).
///
///  - Nothing is consumed while the prefetch is 0 (AMQP's prefetch 0 would
///    mean "unlimited"); set_prefetch(n > 0) sets a per-consumer basic.qos
///    (classic and quorum queues alike) and starts a consumer; a higher n
///    adds a consumer for the difference, a lower one cancels consumers
///    (those holding deliveries only after `consumer_shrink_delay`; see
///    sync_consumer in job_source.cpp); set_prefetch(0) cancels them all and
///    requeues what was buffered.
///  - A message over `max_message_size` is not read: it is handed on invalid,
///    without its body, for the dispatcher to dead-letter with the reason.
///  - Reconnects by itself with backoff when the broker goes away; a pending
///    async_receive keeps waiting across reconnects. Deliveries of a dead
///    connection are the broker's to redeliver.
///  - reject(d, dead_letter, reason) publishes the message (persistent,
///    confirmed, mandatory) to the dead-letter exchange with
///    `x-blacktree-reason` and the original exchange and routing key as
///    headers, and acks the original only once the broker confirmed that
///    publish and no queue refused it; a returned or nacked copy is
///    published again with backoff (50 ms to 5 s), the original held.
///
/// Thread-safety: every member function may be called from any thread.
/// Lifetime: stop() (or the destructor) cancels the consumer, closes the
/// connection (the broker requeues whatever was not acked), completes pending
/// receives with errc::source_closed and joins the thread. Deliveries may
/// outlive the source; settling them afterwards does nothing.
class AmqpJobSource {
 public:
  using delivery_type = AmqpDelivery;
  /// It takes back-pressure (core::PrefetchControl): declared, so that a
  /// misspelt set_prefetch fails to compile instead of losing the broker's QoS.
  static constexpr bool prefetch_control = true;
  /// It hands over what it has buffered in one completion (core::ReceivesBatches).
  static constexpr bool receives_batches = true;
  /// It hands over what it has buffered without a wait (core::TakesReady).
  static constexpr bool takes_ready = true;

  /// Starts connecting in the background. Throws std::invalid_argument when
  /// `options.url` cannot be parsed (the message says why, without the password).
  AmqpJobSource(asio::any_io_executor executor, AmqpOptions options);
  AmqpJobSource(const AmqpJobSource&) = delete;
  AmqpJobSource& operator=(const AmqpJobSource&) = delete;
  ~AmqpJobSource();

  /// Completion: `void(std::error_code, AmqpDelivery)`, on the handler's
  /// associated executor (else the source's). errc::source_closed after
  /// stop(); asio::error::operation_aborted when cancelled through the
  /// handler's cancellation slot.
  template <class Token>
  auto async_receive(Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, AmqpDelivery)>(
        [this](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          const std::uint64_t id = start_receive(ReceiveHandler(std::move(handler), executor_), {}, 1);
          if (id != 0 && slot.is_connected()) slot.template emplace<CancelReceive>(state_, id);
        },
        token);
  }

  /// As async_receive, with 1 to `max` deliveries: once one has arrived, all
  /// that are buffered, up to `max`. Completion: `void(std::error_code,
  /// std::vector<AmqpDelivery>)`.
  template <class Token>
  auto async_receive_some(std::size_t max, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, std::vector<AmqpDelivery>)>(
        [this, max](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          const std::uint64_t id = start_receive({}, BatchHandler(std::move(handler), executor_), max);
          if (id != 0 && slot.is_connected()) slot.template emplace<CancelReceive>(state_, id);
        },
        token);
  }

  /// Up to `max` of the deliveries buffered now, without waiting: none when
  /// none is, after stop(), or while an async receive waits (it goes first).
  std::vector<AmqpDelivery> try_receive_some(std::size_t max);

  /// The job is finished with: basic.ack. Acks asked for while the
  /// connection thread is busy go out together, a run of them below every
  /// unsettled delivery as one multiple ack.
  void ack(AmqpDelivery& delivery);
  /// All of them, in one go (core::SettlesBatches): the connection thread
  /// takes them together, so a run of deliveries is one multiple ack.
  void ack(std::span<AmqpDelivery> deliveries);
  /// requeue: basic.reject(requeue); dead_letter: see the class comment.
  void reject(AmqpDelivery& delivery, core::Disposition disposition, std::string_view reason);
  /// Hold at most `n` unsettled deliveries (basic.qos); 0 consumes nothing.
  void set_prefetch(std::size_t n);

  /// The jobs of deliveries whose connection was lost while they were
  /// handed out: still running here, and acked within `settled_within`.
  /// What an orchestrator tells its peers on the queue (AmqpPeers), so that
  /// a peer the broker redelivers one to waits instead of running it again.
  LostDeliveries lost_deliveries(std::chrono::milliseconds settled_within) const;

  /// Takes nothing more from the broker, for good (unlike set_prefetch(0),
  /// which a later set_prefetch(n) undoes): basic.cancel, and what was
  /// buffered and not yet received goes back to the queue. Deliveries already
  /// received can still be acked and rejected. For a graceful shutdown:
  /// cancel_consumer(), then Dispatcher::async_stop, then stop().
  void cancel_consumer();

  /// Stops and joins the thread; idempotent. Acks and rejects asked for
  /// before it are still sent (and dead-letter copies confirmed, within
  /// connect_timeout) before the connection closes. See the class comment.
  /// Blocks the caller meanwhile (at most about twice connect_timeout, when
  /// the broker does not answer): call it at shutdown, not on a busy asio thread.
  void stop();

  /// True while a connection with an open channel is established (for /healthz).
  bool connected() const noexcept;
  /// The last connection problem, for a person ("cannot connect to
  /// amqp://127.0.0.1:5672/: connection refused"); empty if none yet.
  std::string last_error() const;
  AmqpSourceStats stats() const;
  /// The broker (no credentials): the node connected now ("amqp://host:5672/"),
  /// or while there is none, every address it tries, comma-separated.
  std::string endpoint() const;

 private:
  using ReceiveHandler = core::CompletionHandler<void(std::error_code, AmqpDelivery)>;
  using BatchHandler = core::CompletionHandler<void(std::error_code, std::vector<AmqpDelivery>)>;

  class CancelReceive {
   public:
    CancelReceive(std::weak_ptr<detail::SourceState> state, std::uint64_t id) : state_(std::move(state)), id_(id) {}
    void operator()(asio::cancellation_type type) {
      if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                   asio::cancellation_type::total)) != asio::cancellation_type::none)
        cancel_receive(state_, id_);
    }

   private:
    std::weak_ptr<detail::SourceState> state_;
    std::uint64_t id_;
  };

  /// Returns the receiver's id, or 0 when it completed at once.
  // `one` for async_receive, else `some` with up to `max`; 0 when completed at once.
  std::uint64_t start_receive(ReceiveHandler one, BatchHandler some, std::size_t max);
  static void cancel_receive(const std::weak_ptr<detail::SourceState>& state, std::uint64_t id);

  asio::any_io_executor executor_;
  std::shared_ptr<detail::SourceState> state_;
};

static_assert(core::ReportsInvalid<AmqpDelivery>);
static_assert(core::PrefetchControl<AmqpJobSource>);
static_assert(core::JobSource<AmqpJobSource>);
static_assert(core::ReceivesBatches<AmqpJobSource> && core::SettlesBatches<AmqpJobSource>);

}  // namespace blacktree::amqp
