// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <blacktree/core/completion_handler.hpp>
#include <blacktree/core/concepts.hpp>
#include <blacktree/core/error.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace blacktree::core {

struct DispatcherOptions {
  /// Upper bound on jobs taken from the source and not yet settled; 0 means
  /// the pool's live capacity is the only bound (the usual choice).
  std::size_t max_in_flight = 0;
  /// Workers a job is offered to that never accept it (unreachable, full)
  /// before it gets a failure status.
  std::uint32_t max_attempts = 3;
  /// How long a job may wait for a worker offering its labels; 0 waits forever.
  std::chrono::milliseconds placement_timeout{0};
  /// A worker that cannot be reached when offered a job is marked dead (a
  /// HealthMonitor revives it when it answers again). Turn off if nothing
  /// revives workers in your embedding.
  bool mark_unreachable_dead = true;
  /// A worker that refused a job (full, draining) has fewer free slots than
  /// the pool believes: the refused slot is kept out of use this long, so the
  /// next attempt goes to another slot instead of straight back to it.
  std::chrono::milliseconds refused_slot_cooldown{1000};
  /// Backoff between attempts to publish a status that the sink refused.
  std::chrono::milliseconds publish_retry_initial{50};
  std::chrono::milliseconds publish_retry_max{5000};
};

struct DispatcherStats {
  std::uint64_t received = 0;       ///< deliveries taken from the source
  std::uint64_t succeeded = 0;      ///< final statuses with success
  std::uint64_t failed = 0;         ///< final statuses with failure (lost and invalid included)
  std::uint64_t lost = 0;           ///< jobs whose worker went away while running them
  std::uint64_t dead_lettered = 0;  ///< invalid deliveries parked with a reason
  std::uint64_t handed_back = 0;    ///< deliveries requeued by a stop
  std::uint64_t not_accepted = 0;   ///< offers a worker refused or never saw
  std::uint64_t in_flight = 0;      ///< taken and not yet settled
};

/// Hooks for logs and metrics. Every hook of this base does nothing and
/// inlines away; derive from it, hide the hooks you want, and pass your type
/// as the Dispatcher's `Observer`. Hooks run on the dispatcher's strand,
/// except on_progress, which runs on whatever thread the transport reports
/// from and is only wired up when `wants_progress` is true.
struct DispatcherObserver {
  static constexpr bool wants_progress = false;
  void on_received(const Job&) {}
  void on_assigned(const Job&, const WorkerInfo&) {}
  void on_not_accepted(const Job&, const WorkerInfo&, std::error_code, std::string_view /*detail*/) {}
  void on_progress(const ProgressEvent&) {}
  void on_finished(const Job&, const JobResult&) {}
  void on_dead_lettered(const Job&, std::string_view /*reason*/) {}
  void on_handed_back(const Job&) {}
  void on_publish_failed(const Job&, std::error_code) {}
};
static_assert(ObservesDispatcher<DispatcherObserver>);

/// Moves jobs from a source to workers and their statuses to a sink:
/// receive -> acquire a worker slot -> run -> publish the status -> ack.
///
///  - It holds at most as many unsettled deliveries as the pool has live
///    capacity (and tells the source so through set_prefetch when it models
///    PrefetchControl),
///    so memory does not grow with the depth of the queue.
///  - A job its worker never accepted is offered to another worker; a job
///    whose worker was lost mid-run gets a failure status saying so; a job
///    that ran and failed is never run again (the control plane owns retries).
///  - A delivery is acked only after the sink confirmed its status. Invalid
///    deliveries are dead-lettered with the reason (after a failure status,
///    when they carry a job id).
///  - async_stop takes nothing new, lets running jobs finish until the
///    deadline, and hands back (requeues) what did not.
///
/// All its state lives on one strand; it needs no lock. The source,
/// transport, sink and pool must outlive it. Destroying it abandons what is in
/// flight: unsettled deliveries are dropped, which a broker (and the
/// in-memory queue) answers by delivering them again.
template <JobSource Source, WorkerTransport Transport, StatusSink Sink, LeasePool Pool = WorkerPool,
          ObservesDispatcher Observer = DispatcherObserver>
class Dispatcher {
 public:
  using executor_type = asio::strand<asio::any_io_executor>;

  Dispatcher(asio::any_io_executor executor, Source& source, Transport& transport, Sink& sink, Pool& pool,
             DispatcherOptions options = {}, Observer observer = {})
      : impl_(std::make_shared<Impl>(asio::make_strand(std::move(executor)), source, transport, sink, pool,
                                     options, std::move(observer))) {
    subscription_ = pool.subscribe([weak = std::weak_ptr<Impl>(impl_)](const WorkerEvent& event) {
      if (auto self = weak.lock()) asio::post(self->strand, [self, event] { self->on_pool_event(event); });
    });
  }

  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  ~Dispatcher() {
    subscription_.reset();
    // At once, not through the strand: handlers already queued must not touch
    // the source, transport, sink or pool, which may be destroyed next.
    impl_->abandoned.store(true, std::memory_order_release);
    asio::dispatch(impl_->strand, [impl = impl_] { impl->abandon(); });
  }

  executor_type get_executor() const noexcept { return impl_->strand; }

  /// Starts taking jobs. Call once.
  void start() {
    asio::dispatch(impl_->strand, [impl = impl_] {
      impl->started = true;
      impl->pump();
    });
  }

  /// Graceful stop. Completion: `void(std::error_code)`: no error when
  /// everything in flight finished; errc::stop_deadline_exceeded when running
  /// jobs had to be handed back at the deadline.
  template <class Token>
  auto async_stop(std::chrono::milliseconds deadline, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [impl = impl_, deadline](auto handler) {
          CompletionHandler<void(std::error_code)> erased(std::move(handler), impl->strand);
          asio::dispatch(impl->strand, [impl, deadline, h = std::move(erased)]() mutable {
            impl->begin_stop(deadline, std::move(h));
          });
        },
        token);
  }

  /// Thread-safe.
  DispatcherStats stats() const noexcept {
    const auto& c = impl_->counters;
    auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    return DispatcherStats{get(c.received),      get(c.succeeded),   get(c.failed),
                           get(c.lost),          get(c.dead_lettered), get(c.handed_back),
                           get(c.not_accepted),  get(c.in_flight)};
  }

 private:
  using delivery_type = typename Source::delivery_type;
  using lease_type = typename Pool::Lease;

  enum class Stage { placing, running, publishing, done };

  // One job from delivery to settlement. Handlers hold it by shared_ptr, so a
  // late completion (after the job was settled another way) finds it intact
  // and sees from `stage` and `attempts` that it has nothing left to do.
  struct Context {
    explicit Context(delivery_type d) : delivery(std::move(d)) {}
    const Job& job() const { return delivery.job(); }

    delivery_type delivery;
    Stage stage = Stage::placing;
    lease_type lease;
    std::shared_ptr<const WorkerInfo> worker;  // kept for the transport call
    asio::cancellation_signal cancel;          // the pending acquire or run
    std::uint32_t attempts = 0;
    bool placement_expired = false;
    std::unique_ptr<asio::steady_timer> placement_timer;
    std::unique_ptr<asio::steady_timer> retry_timer;
    std::chrono::milliseconds retry_delay{0};
    std::string dead_letter_reason;  // non-empty: dead-letter once the status is out
    JobResult result;
    std::chrono::system_clock::time_point received_at;
    std::chrono::system_clock::time_point started_at;
  };
  using ContextPtr = std::shared_ptr<Context>;

  struct Counters {
    std::atomic<std::uint64_t> received{0}, succeeded{0}, failed{0}, lost{0}, dead_lettered{0}, handed_back{0},
        not_accepted{0}, in_flight{0};
  };

  struct Impl : std::enable_shared_from_this<Impl> {
    Impl(executor_type s, Source& src, Transport& t, Sink& k, Pool& p, DispatcherOptions o, Observer obs)
        : strand(std::move(s)), source(src), transport(t), sink(k), pool(p), options(o), observer(std::move(obs)) {}

    executor_type strand;
    Source& source;
    Transport& transport;
    Sink& sink;
    Pool& pool;
    DispatcherOptions options;
    Observer observer;
    Counters counters;

    bool started = false;
    bool stopping = false;
    bool forced = false;
    std::atomic<bool> abandoned{false};  // the Dispatcher is gone
    bool source_closed = false;
    bool receive_pending = false;
    asio::cancellation_signal receive_cancel;
    std::size_t in_flight = 0;
    std::size_t prefetch_told = std::numeric_limits<std::size_t>::max();
    std::unordered_set<ContextPtr> active;
    std::unique_ptr<asio::steady_timer> stop_timer;
    std::vector<CompletionHandler<void(std::error_code)>> stop_handlers;

    std::size_t limit() const {
      const std::size_t capacity = pool.alive_capacity();
      return options.max_in_flight ? std::min(capacity, options.max_in_flight) : capacity;
    }

    void tell_prefetch() {
      if constexpr (PrefetchControl<Source>) {
        const std::size_t n = limit();
        if (n != prefetch_told) {
          prefetch_told = n;
          source.set_prefetch(n);
        }
      }
    }

    // Takes one more delivery if there is room; called whenever room may have appeared.
    void pump() {
      if (abandoned || stopping || !started || source_closed) return;
      tell_prefetch();
      if (receive_pending || in_flight >= limit()) return;
      receive_pending = true;
      source.async_receive(asio::bind_cancellation_slot(
          receive_cancel.slot(),
          asio::bind_executor(strand, [self = this->shared_from_this()](std::error_code ec, delivery_type d) mutable {
            self->on_receive(ec, std::move(d));
          })));
    }

    void on_receive(std::error_code ec, delivery_type delivery) {
      receive_pending = false;
      if (abandoned) return;
      if (ec) {
        // Sources reconnect by themselves; an error here means no more deliveries.
        source_closed = true;
        maybe_finish_stop();
        return;
      }
      if (stopping) {
        source.reject(delivery, Disposition::requeue, "dispatcher stopping");
        counters.handed_back.fetch_add(1, std::memory_order_relaxed);
        maybe_finish_stop();
        return;
      }
      auto ctx = std::make_shared<Context>(std::move(delivery));
      ctx->received_at = std::chrono::system_clock::now();
      active.insert(ctx);
      ++in_flight;
      counters.received.fetch_add(1, std::memory_order_relaxed);
      counters.in_flight.store(in_flight, std::memory_order_relaxed);
      observer.on_received(ctx->job());
      if (std::string reason = invalid_reason(*ctx); !reason.empty())
        dead_letter(ctx, std::move(reason));
      else
        place(ctx);
      pump();
    }

    static std::string invalid_reason(const Context& ctx) {
      if constexpr (ReportsInvalid<delivery_type>) {
        std::string_view reason = ctx.delivery.invalid_reason();
        if (!reason.empty()) return std::string(reason);
      }
      if (ctx.job().id.empty()) return "jobId is missing or empty";
      return {};
    }

    void dead_letter(const ContextPtr& ctx, std::string reason) {
      counters.dead_lettered.fetch_add(1, std::memory_order_relaxed);
      observer.on_dead_lettered(ctx->job(), reason);
      if (ctx->job().id.empty()) {
        // Nobody could match a status to it: the dead-letter queue is its trace.
        source.reject(ctx->delivery, Disposition::dead_letter, reason);
        done(ctx);
        return;
      }
      ctx->dead_letter_reason = reason;
      fail(ctx, "invalid job: " + reason);
    }

    void place(const ContextPtr& ctx) {
      ctx->stage = Stage::placing;
      if (options.placement_timeout.count() > 0 && !ctx->placement_timer) {
        ctx->placement_timer = std::make_unique<asio::steady_timer>(strand, options.placement_timeout);
        ctx->placement_timer->async_wait([self = this->shared_from_this(), ctx](std::error_code ec) {
          if (ec || self->abandoned || ctx->stage != Stage::placing) return;
          ctx->placement_expired = true;
          ctx->cancel.emit(asio::cancellation_type::terminal);
        });
      }
      pool.async_acquire(ctx->job().required_labels,
                         asio::bind_cancellation_slot(
                             ctx->cancel.slot(),
                             asio::bind_executor(strand, [self = this->shared_from_this(), ctx](
                                                             std::error_code ec, lease_type lease) mutable {
                               self->on_lease(ctx, ec, std::move(lease));
                             })));
    }

    void on_lease(const ContextPtr& ctx, std::error_code ec, lease_type lease) {
      if (abandoned || ctx->stage != Stage::placing) return;
      if (ec) {
        if (ctx->placement_expired)
          fail(ctx, "no worker offering " + to_string(ctx->job().required_labels) + " became free within " +
                        std::to_string(options.placement_timeout.count()) + " ms");
        else
          hand_back(ctx);  // stopping, or the pool was stopped
        return;
      }
      if (stopping) {
        lease.release();
        hand_back(ctx);
        return;
      }
      if (!lease.current()) {  // the worker died between the grant and now
        lease.release();
        place(ctx);
        return;
      }
      ctx->lease = std::move(lease);
      ctx->worker = ctx->lease.worker_info();
      ctx->stage = Stage::running;
      ctx->started_at = std::chrono::system_clock::now();
      const std::uint32_t attempt = ++ctx->attempts;
      observer.on_assigned(ctx->job(), *ctx->worker);

      ProgressCallback progress;
      if constexpr (Observer::wants_progress) {
        progress = [weak = this->weak_from_this()](const ProgressEvent& event) {
          if (auto self = weak.lock()) self->observer.on_progress(event);
        };
      }
      transport.async_run(*ctx->worker, ctx->job(), std::move(progress),
                          asio::bind_cancellation_slot(
                              ctx->cancel.slot(),
                              asio::bind_executor(strand, [self = this->shared_from_this(), ctx, attempt](
                                                              std::error_code run_ec, JobResult result) mutable {
                                self->on_result(ctx, attempt, run_ec, std::move(result));
                              })));
    }

    void on_result(const ContextPtr& ctx, std::uint32_t attempt, std::error_code ec, JobResult result) {
      // Already settled another way (worker declared lost, handed back at a stop deadline).
      if (abandoned || ctx->stage != Stage::running || attempt != ctx->attempts) return;
      if (ec && never_accepted(ec)) {
        counters.not_accepted.fetch_add(1, std::memory_order_relaxed);
        const auto worker = ctx->worker;
        observer.on_not_accepted(ctx->job(), *worker, ec, result.error);
        if (ec == errc::worker_refused && options.refused_slot_cooldown.count() > 0) {
          park(std::move(ctx->lease));
        } else {
          ctx->lease.release();
        }
        if (ec == errc::worker_unreachable && options.mark_unreachable_dead) {
          // Fails only if the worker was deregistered meanwhile: nothing to mark then.
          (void)pool.mark_dead(worker->id, "unreachable when offered job " + ctx->job().id + ": " + result.error);
        }
        if (ctx->attempts >= options.max_attempts) {
          fail(ctx, "no worker accepted the job after " + std::to_string(ctx->attempts) + " attempts; last, " +
                        worker->id + ": " + (result.error.empty() ? ec.message() : result.error));
        } else if (stopping) {
          hand_back(ctx);
        } else {
          place(ctx);
        }
        return;
      }
      if (ec) {
        lost(ctx, result.error.empty() ? ec.message() : result.error);
        return;
      }
      finalize(ctx, std::move(result));
    }

    // Holds a refused slot for the cooldown, then returns it (its release, or
    // the timer's destruction with the io_context, gives it back exactly once).
    void park(lease_type lease) {
      auto timer = std::make_shared<asio::steady_timer>(strand, options.refused_slot_cooldown);
      timer->async_wait([timer, held = std::make_shared<lease_type>(std::move(lease))](std::error_code) mutable {
        held->release();
      });
    }

    void on_pool_event(const WorkerEvent& event) {
      if (abandoned) return;
      if (event.leases_lost) {
        std::vector<ContextPtr> victims;
        for (const auto& ctx : active)
          if (ctx->stage == Stage::running && ctx->worker->id == event.info->id &&
              ctx->lease.generation() == event.lost_generation)
            victims.push_back(ctx);
        for (const auto& ctx : victims) {
          ctx->cancel.emit(asio::cancellation_type::terminal);  // tell the transport to let go
          lost(ctx, event.reason);
        }
      }
      pump();
    }

    void lost(const ContextPtr& ctx, const std::string& detail) {
      counters.lost.fetch_add(1, std::memory_order_relaxed);
      fail(ctx, "worker " + ctx->worker->id + " was lost while running the job (" + detail +
                    "); it may have partly run and is not retried");
    }

    void fail(const ContextPtr& ctx, std::string error) {
      JobResult result;
      result.success = false;
      result.error = std::move(error);
      finalize(ctx, std::move(result));
    }

    void finalize(const ContextPtr& ctx, JobResult result) {
      ctx->lease.release();  // the worker is free while the status goes out
      ctx->stage = Stage::publishing;
      const Job& job = ctx->job();
      result.job_id = job.id;
      if (result.worker_id.empty() && ctx->worker) result.worker_id = ctx->worker->id;
      result.redelivered = job.redelivered;
      result.attempts = ctx->attempts;
      result.received_at = ctx->received_at;
      result.started_at = ctx->started_at;
      result.finished_at = std::chrono::system_clock::now();
      (result.success ? counters.succeeded : counters.failed).fetch_add(1, std::memory_order_relaxed);
      ctx->result = std::move(result);
      observer.on_finished(job, ctx->result);
      publish(ctx);
    }

    void publish(const ContextPtr& ctx) {
      sink.async_publish(ctx->result,
                         asio::bind_executor(strand, [self = this->shared_from_this(), ctx](std::error_code ec) {
                           self->on_published(ctx, ec);
                         }));
    }

    void on_published(const ContextPtr& ctx, std::error_code ec) {
      if (abandoned || ctx->stage != Stage::publishing) return;
      if (ec) {
        observer.on_publish_failed(ctx->job(), ec);
        ctx->retry_delay = std::clamp(ctx->retry_delay * 2, options.publish_retry_initial, options.publish_retry_max);
        if (!ctx->retry_timer) ctx->retry_timer = std::make_unique<asio::steady_timer>(strand);
        ctx->retry_timer->expires_after(ctx->retry_delay);
        ctx->retry_timer->async_wait([self = this->shared_from_this(), ctx](std::error_code wait_ec) {
          if (!wait_ec && !self->abandoned && ctx->stage == Stage::publishing) self->publish(ctx);
        });
        return;
      }
      if (!ctx->dead_letter_reason.empty())
        source.reject(ctx->delivery, Disposition::dead_letter, ctx->dead_letter_reason);
      else
        source.ack(ctx->delivery);
      done(ctx);
    }

    void hand_back(const ContextPtr& ctx) {
      ctx->lease.release();
      observer.on_handed_back(ctx->job());  // before reject: it empties the delivery
      source.reject(ctx->delivery, Disposition::requeue, "dispatcher stopping");
      counters.handed_back.fetch_add(1, std::memory_order_relaxed);
      done(ctx);
    }

    void done(const ContextPtr& ctx) {
      ctx->stage = Stage::done;
      if (ctx->placement_timer) ctx->placement_timer->cancel();
      if (ctx->retry_timer) ctx->retry_timer->cancel();
      active.erase(ctx);
      --in_flight;
      counters.in_flight.store(in_flight, std::memory_order_relaxed);
      pump();
      maybe_finish_stop();
    }

    void begin_stop(std::chrono::milliseconds deadline, CompletionHandler<void(std::error_code)> handler) {
      stop_handlers.push_back(std::move(handler));
      if (stopping) {
        maybe_finish_stop();
        return;
      }
      stopping = true;
      if (receive_pending) receive_cancel.emit(asio::cancellation_type::terminal);
      std::vector<ContextPtr> placing;
      for (const auto& ctx : active)
        if (ctx->stage == Stage::placing) placing.push_back(ctx);
      for (const auto& ctx : placing) ctx->cancel.emit(asio::cancellation_type::terminal);
      stop_timer = std::make_unique<asio::steady_timer>(strand, deadline);
      stop_timer->async_wait([self = this->shared_from_this()](std::error_code ec) {
        if (!ec) self->force_stop();
      });
      maybe_finish_stop();
    }

    // The deadline passed: hand back whatever has not settled.
    void force_stop() {
      if (abandoned || stop_handlers.empty()) return;
      forced = true;
      std::vector<ContextPtr> left(active.begin(), active.end());
      for (const auto& ctx : left) {
        if (ctx->stage == Stage::running) ctx->cancel.emit(asio::cancellation_type::terminal);
        if (ctx->stage != Stage::done) hand_back(ctx);
      }
      maybe_finish_stop();
    }

    void maybe_finish_stop() {
      if (!stopping || stop_handlers.empty() || in_flight != 0 || (receive_pending && !forced)) return;
      if (stop_timer) stop_timer->cancel();
      const std::error_code result = forced ? make_error_code(errc::stop_deadline_exceeded) : std::error_code{};
      auto handlers = std::move(stop_handlers);
      stop_handlers.clear();
      for (auto& handler : handlers) handler.complete(result);
    }

    // The Dispatcher object is gone: cancel everything, settle nothing.
    void abandon() {
      abandoned = true;
      if (receive_pending) receive_cancel.emit(asio::cancellation_type::terminal);
      std::vector<ContextPtr> left(active.begin(), active.end());
      active.clear();
      for (const auto& ctx : left) {
        ctx->cancel.emit(asio::cancellation_type::terminal);
        if (ctx->placement_timer) ctx->placement_timer->cancel();
        if (ctx->retry_timer) ctx->retry_timer->cancel();
        ctx->lease.release();
      }
      if (stop_timer) stop_timer->cancel();
      auto handlers = std::move(stop_handlers);
      stop_handlers.clear();
      for (auto& handler : handlers) handler.complete(asio::error::operation_aborted);
    }
  };

  std::shared_ptr<Impl> impl_;
  typename Pool::Subscription subscription_;
};

}  // namespace blacktree::core
