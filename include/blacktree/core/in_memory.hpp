// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// In-memory models of the three concepts: a queue with broker-like delivery
// semantics, a loopback transport whose "workers" are functions in this
// process, and a status sink that keeps what it confirms. Embed the core with
// no broker at all, or use them to test code built on it.

#include <blacktree/core/completion_handler.hpp>
#include <blacktree/core/concepts.hpp>
#include <blacktree/core/detail/config.hpp>
#include <blacktree/core/error.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/publish_completion.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace blacktree::core {

/// A job queue with a broker's delivery semantics: each message is delivered
/// to one receiver at a time and stays "unacked" until acked or rejected; a
/// delivery dropped unsettled is requeued and marked redelivered.
class InMemoryQueue {
  struct State;

 public:
  /// A message that could not be turned into a job has a non-empty `invalid_reason`.
  struct Message {
    Job job;
    std::string invalid_reason;
  };
  struct DeadLetter {
    Job job;
    std::string reason;
  };

  class Delivery {
   public:
    static constexpr bool reports_invalid = true;  // see delivery_traits

    Delivery() = default;
    Delivery(Delivery&&) noexcept = default;
    Delivery& operator=(Delivery&& other) noexcept;
    ~Delivery();

    const Job& job() const noexcept { return message_.job; }
    std::string_view invalid_reason() const noexcept { return message_.invalid_reason; }

   private:
    friend class InMemoryQueue;
    Delivery(std::shared_ptr<State> state, Message message)
        : state_(std::move(state)), message_(std::move(message)) {}
    void hand_back() noexcept;
    std::shared_ptr<State> state_;  // null once settled
    Message message_;
  };
  using delivery_type = Delivery;
  static constexpr bool prefetch_control = true;  // see job_source_traits
  static constexpr bool receives_batches = true;  // see job_source_traits
  static constexpr bool takes_ready = true;       // see job_source_traits

  explicit InMemoryQueue(asio::any_io_executor executor);
  InMemoryQueue(const InMemoryQueue&) = delete;
  InMemoryQueue& operator=(const InMemoryQueue&) = delete;
  ~InMemoryQueue();

  void publish(Job job);
  /// A message an adapter could not parse or validate; `job.id` may be empty.
  void publish_invalid(Job job, std::string reason);

  /// Completion: `void(std::error_code, Delivery)`; errc::source_closed after close().
  template <class Token>
  auto async_receive(Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, Delivery)>(
        [this](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          Receiver receiver;
          receiver.one = ReceiveHandler(std::move(handler), state_->executor);
          start_receive(std::move(receiver), slot);
        },
        token);
  }

  /// Completion: `void(std::error_code, std::vector<Delivery>)` with 1 to
  /// `max` deliveries (at least one; `max` 0 counts as 1): all that are
  /// ready, up to `max`, once one is (see ReceivesBatches).
  template <class Token>
  auto async_receive_some(std::size_t max, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, std::vector<Delivery>)>(
        [this, max](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          Receiver receiver;
          receiver.some = BatchHandler(std::move(handler), state_->executor);
          receiver.max = std::max<std::size_t>(max, 1);
          start_receive(std::move(receiver), slot);
        },
        token);
  }

  /// Up to `max` of the messages ready now, without waiting (TakesReady):
  /// none when none is, after close(), or while an async receive waits.
  std::vector<Delivery> try_receive_some(std::size_t max);

  void ack(Delivery& delivery);
  /// Each of them, under one lock (SettlesBatches).
  void ack(std::span<Delivery> deliveries);
  void reject(Delivery& delivery, Disposition disposition, std::string_view reason);
  void set_prefetch(std::size_t n);

  /// Delivers nothing more: pending and future receives fail with errc::source_closed.
  void close();

  std::size_t ready() const;        ///< waiting to be delivered
  std::size_t unacked() const;      ///< delivered, not settled
  std::size_t max_unacked() const;  ///< the most ever unsettled at once
  std::size_t acked() const;
  std::size_t prefetch() const;     ///< the last set_prefetch value
  std::vector<DeadLetter> dead_letters() const;

 private:
  using ReceiveHandler = CompletionHandler<void(std::error_code, Delivery)>;
  using BatchHandler = CompletionHandler<void(std::error_code, std::vector<Delivery>)>;
  // A pending async_receive (`one`) or async_receive_some (`some`, up to `max`).
  struct Receiver {
    std::uint64_t id = 0;
    ReceiveHandler one;
    BatchHandler some;
    std::size_t max = 1;
  };
  struct State {
    explicit State(asio::any_io_executor ex) : executor(std::move(ex)) {}
    asio::any_io_executor executor;
    mutable std::mutex mutex;
    std::deque<Message> ready;
    std::list<Receiver> receivers;
    std::uint64_t next_receiver = 1;
    std::size_t unacked = 0;
    std::size_t max_unacked = 0;
    std::size_t acked = 0;
    std::size_t prefetch = 0;
    std::vector<DeadLetter> dead_letters;
    bool closed = false;
  };
  class CancelReceive {
   public:
    CancelReceive(std::weak_ptr<State> state, std::uint64_t id) : state_(std::move(state)), id_(id) {}
    void operator()(asio::cancellation_type type);

   private:
    std::weak_ptr<State> state_;
    std::uint64_t id_;
  };

  void start_receive(Receiver receiver, asio::cancellation_slot slot);
  // Completes `receiver` with what is ready (at least one message); unlocks first.
  static void deliver_locked(const std::shared_ptr<State>& state, Receiver receiver,
                             std::unique_lock<std::mutex>& lock);
  static void fail(Receiver& receiver, std::error_code ec);

  static Delivery take_locked(const std::shared_ptr<State>& state);
  static std::vector<Delivery> take_some_locked(const std::shared_ptr<State>& state, std::size_t max);
  static void enqueue(const std::shared_ptr<State>& state, Message message);
  static void settle(Delivery& delivery);

  std::shared_ptr<State> state_;
};

/// A transport to "workers" that live in this process, addressed by a string.
/// Each endpoint has a capacity (it refuses jobs beyond it, like a full
/// worker), an optional runner (default: succeed at once), and a mode that
/// simulates failures.
class LoopbackTransport {
  struct Endpoint;
  struct CallState;

 public:
  enum class Mode {
    up,           ///< answers pings, runs jobs
    unreachable,  ///< refuses connections: pings and runs fail at once, running jobs are lost
    /// hangs, like a stopped process: pings time out and runs offered
    /// meanwhile wait, until cancelled, lost (unreachable, restart) or, once
    /// the endpoint is `up` again, run as usual (the process was resumed).
    silent,
  };

  /// One run in progress, handed to a Runner. Copyable handle, usable from
  /// any thread and for as long as it is held; the first of complete/fail
  /// wins, later calls return false.
  class Call {
   public:
    const Job& job() const noexcept;
    const WorkerInfo& worker() const noexcept;
    /// A Phase::running event: `stage` names what the job is doing, `line`
    /// is one line of its output (empty for a bare stage change).
    void progress(std::string_view stage, std::string_view line = {}) const;
    bool complete(JobResult result) const;
    bool fail(std::error_code ec, std::string detail) const;

   private:
    friend class LoopbackTransport;
    explicit Call(std::shared_ptr<CallState> state) : state_(std::move(state)) {}
    std::shared_ptr<CallState> state_;
  };
  using Runner = std::function<void(Call)>;

  /// A run reports Phase::accepted when it starts on the endpoint (at once,
  /// or once a silent endpoint is up again); see worker_transport_traits.
  static constexpr bool reports_accepted = true;

  explicit LoopbackTransport(asio::any_io_executor executor);
  LoopbackTransport(const LoopbackTransport&) = delete;
  LoopbackTransport& operator=(const LoopbackTransport&) = delete;
  ~LoopbackTransport();

  void add_endpoint(std::string address, std::uint32_t capacity = std::numeric_limits<std::uint32_t>::max(),
                    Runner runner = {});
  void set_runner(std::string_view address, Runner runner);
  void set_mode(std::string_view address, Mode mode);
  /// The endpoint restarts: a new incarnation, its running jobs are lost.
  void restart(std::string_view address);
  std::string incarnation(std::string_view address) const;
  std::size_t running(std::string_view address) const;
  std::size_t runs_started(std::string_view address) const;

  template <class Token>
  auto async_run(const WorkerInfo& worker, const Job& job, ProgressCallback progress, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, JobResult)>(
        [this, &worker, &job](auto handler, ProgressCallback on_progress) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto call = start_run(worker, job, std::move(on_progress), RunHandler(std::move(handler), executor_));
          if (call && slot.is_connected()) slot.template emplace<CancelRun>(call);
        },
        token, std::move(progress));
  }

  /// A silent endpoint's ping waits for its deadline (errc::ping_timeout);
  /// cancelling it completes it at once with asio::error::operation_aborted.
  template <class Token>
  auto async_ping(const WorkerInfo& worker, std::chrono::milliseconds deadline, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, PingReply)>(
        [this, &worker, deadline](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto ping = start_ping(worker, deadline, PingHandler(std::move(handler), executor_));
          if (ping && slot.is_connected()) slot.template emplace<CancelPing>(ping);
        },
        token);
  }

 private:
  using RunHandler = CompletionHandler<void(std::error_code, JobResult)>;
  using PingHandler = CompletionHandler<void(std::error_code, PingReply)>;

  struct Endpoint {
    std::string address;
    std::uint32_t capacity = 0;
    Runner runner;
    Mode mode = Mode::up;
    std::string incarnation;
    std::uint64_t next_call = 1;
    std::size_t runs_started = 0;
    // The endpoint owns its calls until they finish: a run that hangs (silent)
    // must still be there to be cancelled, lost or resumed.
    std::unordered_map<std::uint64_t, std::shared_ptr<CallState>> calls;
  };
  struct AddressHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  struct Shared {
    mutable std::mutex mutex;
    // Looked up by string_view on every run and ping: no temporary string.
    std::unordered_map<std::string, std::shared_ptr<Endpoint>, AddressHash, std::equal_to<>> endpoints;
    std::uint64_t restarts = 0;
  };
  struct CallState {
    std::shared_ptr<Shared> shared;
    std::shared_ptr<Endpoint> endpoint;
    std::uint64_t id = 0;
    // Copies: the caller's are only valid until the handler runs, and a
    // runner may still hold its Call after a cancellation completed it. (A
    // run without a runner, on an endpoint that is up, needs no CallState.)
    CallState(const Job& j, const WorkerInfo& w) : job(j), worker(w) {}
    Job job;
    WorkerInfo worker;
    ProgressCallback progress;
    std::atomic<bool> done{false};
    bool waiting = false;  // offered while the endpoint was silent; not started yet (guarded by Shared::mutex)
    RunHandler handler;
  };
  class CancelRun {
   public:
    explicit CancelRun(std::weak_ptr<CallState> call) : call_(std::move(call)) {}
    void operator()(asio::cancellation_type type);

   private:
    std::weak_ptr<CallState> call_;
  };
  // A ping waiting for its deadline. The timer lives on a strand of its own:
  // a cancellation may come from any thread, and it must cancel the timer
  // (so no wait outlives the ping) without racing the timer's completion.
  struct PendingPing {
    PendingPing(const asio::any_io_executor& ex, PingHandler h)
        : strand(asio::make_strand(ex)), timer(strand), handler(std::move(h)) {}
    asio::strand<asio::any_io_executor> strand;
    asio::steady_timer timer;
    std::atomic<bool> done{false};  // the first of deadline and cancellation completes
    PingHandler handler;
  };
  class CancelPing {
   public:
    explicit CancelPing(std::weak_ptr<PendingPing> ping) : ping_(std::move(ping)) {}
    void operator()(asio::cancellation_type type);

   private:
    std::weak_ptr<PendingPing> ping_;
  };

  std::shared_ptr<CallState> start_run(const WorkerInfo& worker, const Job& job, ProgressCallback progress,
                                       RunHandler handler);
  // Returns the pending ping, or null when it completed at once.
  std::shared_ptr<PendingPing> start_ping(const WorkerInfo& worker, std::chrono::milliseconds deadline,
                                          PingHandler handler);
  static void finish_ping(const std::shared_ptr<PendingPing>& ping, std::error_code ec);
  static bool finish(const std::shared_ptr<CallState>& call, std::error_code ec, JobResult result);
  static void end_calls(const std::shared_ptr<Endpoint>& endpoint, std::error_code ec, const std::string& detail,
                        std::unique_lock<std::mutex>& lock);
  void start_call(const std::shared_ptr<CallState>& call, const Runner& runner);
  std::shared_ptr<Endpoint> find_locked(std::string_view address) const;

  asio::any_io_executor executor_;
  std::shared_ptr<Shared> shared_;
};

/// A status sink that keeps every status it confirms. It can hold confirms
/// back (to show that nothing is acked before its status is durable) and
/// fail publishes (to exercise retries).
class InMemoryStatusSink {
  struct State;

 public:
  explicit InMemoryStatusSink(asio::any_io_executor executor);
  InMemoryStatusSink(const InMemoryStatusSink&) = delete;
  InMemoryStatusSink& operator=(const InMemoryStatusSink&) = delete;

  /// It publishes batches (PublishesBatches): declared, see status_sink_traits.
  static constexpr bool publishes_batches = true;

  /// Cancelling a held publish withdraws its status (it is never confirmed)
  /// and completes it with asio::error::operation_aborted.
  template <class Token>
  auto async_publish(const JobResult& result, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this, &result](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          const JobResult* const one = &result;
          const HeldIds held = start_publish({&one, 1}, PublishCompletion::Single(std::move(handler), executor_));
          if (held.first != 0 && slot.is_connected()) slot.template emplace<CancelPublish>(state_, held);
        },
        token);
  }

  /// Each status as async_publish (in one lock); cancelling withdraws every
  /// status of the call still held.
  template <class Token>
  auto async_publish_some(std::span<const JobResult* const> results, Token&& token) {
    return asio::async_initiate<Token, void(std::vector<std::error_code>)>(
        [this, results](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          const HeldIds held = start_publish(results, PublishCompletion::Batch(std::move(handler), executor_));
          if (held.first != 0 && slot.is_connected()) slot.template emplace<CancelPublish>(state_, held);
        },
        token);
  }

  /// While held, publishes stay unconfirmed until confirm_held().
  void hold_confirms(bool hold);
  /// Confirms every held publish; returns how many.
  std::size_t confirm_held();
  /// The next `n` publishes fail with errc::sink_unavailable.
  void fail_next(std::size_t n);

  std::vector<JobResult> results() const;  ///< confirmed statuses, in order
  std::size_t size() const;                ///< confirmed statuses
  std::size_t held() const;
  /// Blocks until `n` statuses are confirmed or `timeout` passes; true if reached.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout) const;

 private:
  struct Held {
    std::uint64_t id;
    JobResult result;
    PublishCompletion completion;
  };
  // The ids of the publishes one call left held: [first, last], {0, 0} for none.
  using HeldIds = std::pair<std::uint64_t, std::uint64_t>;
  // Shared with cancellation handlers, which may outlive the sink.
  struct State {
    mutable std::mutex mutex;
    mutable std::condition_variable confirmed;
    std::vector<JobResult> results;
    std::list<Held> held;
    std::uint64_t next_held = 1;
    bool hold = false;
    std::size_t fail_next = 0;
  };
  class CancelPublish {
   public:
    CancelPublish(std::weak_ptr<State> state, HeldIds ids) : state_(std::move(state)), ids_(ids) {}
    void operator()(asio::cancellation_type type);

   private:
    std::weak_ptr<State> state_;
    HeldIds ids_;
  };

  // A single publish (`results` of one) or a batch.
  HeldIds start_publish(std::span<const JobResult* const> results, PublishCompletion::Single handler);
  HeldIds start_publish(std::span<const JobResult* const> results, PublishCompletion::Batch handler);
  HeldIds start_publish(std::span<const JobResult* const> results, std::vector<PublishCompletion> completions);

  asio::any_io_executor executor_;
  std::shared_ptr<State> state_;
};

static_assert(JobSource<InMemoryQueue>);
static_assert(WorkerTransport<LoopbackTransport>);
static_assert(StatusSink<InMemoryStatusSink> && PublishesBatches<InMemoryStatusSink>);

}  // namespace blacktree::core

#ifdef BLACKTREE_HEADER_ONLY
#include <blacktree/core/in_memory-inl.hpp>
#endif
