// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <blacktree/core/completion_handler.hpp>
#include <blacktree/core/concepts.hpp>
#include <blacktree/core/detail/deadline_heap.hpp>
#include <blacktree/core/detail/recent_ids.hpp>
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
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace blacktree::core {

struct DispatcherOptions {
  /// Upper bound on jobs taken from the source and placed (or being placed)
  /// on a worker, not yet settled; 0 means the pool's live capacity is the
  /// bound (the usual choice). Jobs waiting for a worker are bounded by
  /// `max_waiting` instead.
  std::size_t max_in_flight = 0;
  /// Jobs held that no worker can take now (every worker with their labels
  /// is busy, or there is none), beyond the window above, so that a backlog
  /// for one label does not keep another label's idle workers from work.
  /// Waiting jobs beyond this many take window slots again; 0 makes every
  /// waiting job take one (a backlog for one label then stalls the rest).
  std::size_t max_waiting = 64;
  /// Offers of a job that fail without an answer (the worker unreachable, or
  /// too slow to accept) before it gets a failure status. A worker that
  /// answers and refuses (full, draining) uses up none: like a busy worker,
  /// it makes the job wait (its slot rests for refused_slot_cooldown).
  std::uint32_t max_attempts = 3;
  /// A job that waited this long while no live worker offers its labels
  /// fails, with a status naming the labels nobody offers. A job whose
  /// workers exist but are busy keeps waiting. 0 waits forever.
  std::chrono::milliseconds placement_timeout{300'000};
  /// An offered job the worker has not accepted within this is taken back
  /// (the run is cancelled) and offered elsewhere; the worker is not declared
  /// dead for it (only missed pings do that). Enforced by the dispatcher for
  /// transports that report acceptance (worker_transport_traits); others
  /// apply their own. 0: no limit from the dispatcher.
  std::chrono::milliseconds accept_timeout{10'000};
  /// A worker that did not take a job (refused: full, draining; unreachable;
  /// too slow to accept) has fewer usable slots than the pool believes: the
  /// slot is kept out of use this long, so the next attempt goes to another
  /// slot instead of straight back to it.
  std::chrono::milliseconds refused_slot_cooldown{1000};
  /// Backoff between attempts to publish a status that the sink refused.
  std::chrono::milliseconds publish_retry_initial{50};
  std::chrono::milliseconds publish_retry_max{5000};
  /// One run per job id: a delivery of a job id whose status was confirmed
  /// less than `finished_record_ttl` ago, among the last
  /// `finished_record_size` such ids, is acked without running again (a
  /// broker redelivery after a lost connection). 0 keeps no record. A control
  /// plane that retries a job gives the retry a new job id.
  std::size_t finished_record_size = 10'000;
  std::chrono::milliseconds finished_record_ttl{600'000};
  /// A job running longer than its timeout (this when it sets none; 0: no
  /// limit for those) plus `run_timeout_grace` is cancelled on its worker and
  /// reported lost: a worker that answers pings but never finishes a job
  /// does not hold it forever. The grace covers the worker's own enforcement
  /// of the timeout and its report; keep the default at least the workers'
  /// job timeout.
  std::chrono::milliseconds default_job_timeout{1'800'000};
  std::chrono::milliseconds run_timeout_grace{60'000};
  /// A cancel (async_cancel) of a job id neither in flight nor recently
  /// finished is kept this long, among the last `cancel_record_size`, so that
  /// a cancel that overtakes its job still stops it: the job is then settled
  /// cancelled without running. 0 keeps none.
  std::size_t cancel_record_size = 10'000;
  std::chrono::milliseconds cancel_record_ttl{3'600'000};
  /// A running job asked to stop has this long for its worker to report
  /// (its processes gone) before the dispatcher lets go of the run, tells
  /// the transport to drop it, and reports the job cancelled regardless.
  std::chrono::milliseconds cancel_grace{30'000};
  /// Builds outlive their orchestrator: with a pool that knows which worker
  /// carries a job id (WorkerPool::claim), a delivery of a job a worker
  /// still runs, or has finished, attaches to that run on that worker. A
  /// redelivered job nobody carries yet waits up to this long for its
  /// worker to register (it may be on its way from an orchestrator that
  /// went away) before it is placed like any other; keep it above the time
  /// workers take to register again (missed pings plus their backoff). 0:
  /// never waits, so a job whose worker registers late may run twice.
  std::chrono::milliseconds carrier_wait{0};
  /// Several dispatchers on one source (orchestrators sharing a queue): a
  /// dispatcher whose delivery went back to the source while its job still
  /// runs (the broker connection it came on was lost) tells its peers so
  /// (held_elsewhere), again and again while it runs, and then that its
  /// status is out (settled_elsewhere). A redelivered job a peer said it
  /// holds within the last `peer_hold` waits for that peer instead of
  /// running again: settled_elsewhere acks it without a run or a status of
  /// its own; a peer silent for `peer_hold` lets it go on (placement, once
  /// carrier_wait is over too). Needs carrier_wait (the redelivery usually
  /// comes before the peer, reconnecting, can say so). Keep it a few of the
  /// peers' announcement intervals. 0: peers are not listened to.
  std::chrono::milliseconds peer_hold{0};
  /// A redelivered job whose worker registered with a peer (carried_elsewhere)
  /// goes back to the source after this pause, to reach that peer, which
  /// attaches to the run; the pause bounds the round trips while the peer has
  /// no room for it.
  std::chrono::milliseconds pass_back_delay{200};
};

/// What async_cancel found.
enum class CancelOutcome : std::uint8_t {
  cancelled,   ///< it was waiting for a worker: settled cancelled without running
  stopping,    ///< it runs: its worker was asked to stop it, and its status follows
  finished,    ///< it already has its status (being published or confirmed): left alone
  remembered,  ///< not seen: should it arrive within cancel_record_ttl, it is settled cancelled unrun
};

constexpr std::string_view to_string(CancelOutcome outcome) noexcept {
  switch (outcome) {
    case CancelOutcome::cancelled: return "cancelled before it ran";
    case CancelOutcome::stopping: return "its worker was asked to stop it";
    case CancelOutcome::finished: return "it had already finished; left alone";
    case CancelOutcome::remembered: return "not seen yet; remembered in case it arrives";
  }
  return "unknown";
}

struct DispatcherStats {
  std::uint64_t received = 0;       ///< deliveries taken from the source
  std::uint64_t succeeded = 0;      ///< final statuses with success
  std::uint64_t failed = 0;         ///< final statuses with failure (lost and invalid included)
  std::uint64_t lost = 0;           ///< jobs whose worker went away while running them
  std::uint64_t dead_lettered = 0;  ///< invalid deliveries parked with a reason
  std::uint64_t handed_back = 0;    ///< deliveries requeued by a stop
  std::uint64_t not_accepted = 0;   ///< offers a worker refused or never saw
  std::uint64_t in_flight = 0;      ///< taken and not yet settled
  std::uint64_t duplicates = 0;     ///< deliveries of a job id in flight or finished, not run again
  std::uint64_t cancelled = 0;      ///< final statuses that say cancelled (counted in failed too)
  std::uint64_t adopted = 0;        ///< runs attached to on the worker that carried them (see carrier_wait)
  std::uint64_t settled_elsewhere = 0;  ///< deliveries acked because a peer ran the job and published its status (peer_hold)
  std::uint64_t passed_back = 0;  ///< redeliveries requeued for the peer whose worker carries the run (carried_elsewhere)
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
  /// Optional (found by its expression): the job goes to the worker that
  /// carries its run (see carrier_wait); on_assigned follows.
  void on_adopted(const Job&, const WorkerInfo&) {}
  /// Optional (found by its expression): a peer ran the job and published
  /// its status (see peer_hold): its delivery here is acked without a run;
  /// on_settled follows.
  void on_settled_elsewhere(const Job&) {}
  /// Optional (found by its expression): the job's worker is registered with
  /// a peer (see carried_elsewhere): its redelivery goes back to the source.
  void on_passed_back(const Job&) {}
  void on_not_accepted(const Job&, const WorkerInfo&, std::error_code, std::string_view /*detail*/) {}
  void on_progress(const ProgressEvent&) {}
  void on_finished(const Job&, const JobResult&) {}
  /// Its status confirmed and its delivery settled: the job is done here.
  void on_settled(const Job&) {}
  void on_dead_lettered(const Job&, std::string_view /*reason*/) {}
  void on_handed_back(const Job&) {}
  void on_publish_failed(const Job&, std::error_code) {}
};
static_assert(ObservesDispatcher<DispatcherObserver>);

/// Moves jobs from a source to workers and their statuses to a sink:
/// receive -> acquire a worker slot -> run -> publish the status -> ack.
///
///  - It holds at most as many placed, unsettled deliveries as the pool has
///    live capacity, plus up to `max_waiting` jobs no worker can take now (and
///    tells the source so through set_prefetch when it models
///    PrefetchControl), so memory does not grow with the depth of the queue
///    and a backlog for one label does not starve the others.
///  - One run per job id: a delivery of a job id already in flight attaches
///    to it and is settled with it; one whose status was confirmed recently
///    is acked without running again; one that a worker carries (it still
///    runs it, or keeps its result, from an orchestrator that went away) is
///    sent to that worker, which attaches to its run (carrier_wait).
///  - A job its worker never accepted is offered to another worker; a job
///    whose worker was lost mid-run, or that ran past its timeout plus a
///    grace, gets a failure status saying so; a job that ran and failed is
///    never run again (the control plane owns retries).
///  - Every status carries a status id, the same on every retry of its
///    publish and new for every run.
///  - Batches where the parts offer them: the whole free window in one
///    receive (ReceivesBatches); the statuses that finish together (before
///    the strand gets round to sending them) in one call (PublishesBatches);
///    a job's duplicate deliveries in one ack (SettlesBatches).
///  - A delivery is acked only after the sink confirmed its status. Invalid
///    deliveries are dead-lettered with the reason (after a failure status,
///    when they carry a job id).
///  - async_cancel settles a waiting job cancelled without running, asks a
///    running one's worker to stop it (partial cancellation of the run, then
///    terminal after `cancel_grace`), leaves a finished one alone, and
///    remembers an unknown id for a job yet to arrive. Each job still gets
///    exactly one status: a cancelled one says `cancelled`.
///  - A redelivered job that a peer dispatcher on the same source still
///    runs (held_elsewhere) waits for it and is acked once the peer says its
///    status is out (settled_elsewhere), instead of running twice; one whose
///    worker registered with a peer (carried_elsewhere) goes back to the
///    source until it reaches that peer.
///  - async_stop takes nothing new, lets running jobs finish until the
///    deadline, and hands back (requeues) what has no result by then; a
///    running job is handed over (run_hand_over), not stopped: it goes on
///    on its worker, and its next delivery attaches to it.
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
  /// everything in flight finished; errc::stop_deadline_exceeded at the
  /// deadline, when jobs without a result were handed back (jobs whose status
  /// is being published are not: they stay unsettled until it is confirmed,
  /// then are acked).
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

  /// Asks for job `job_id` to be stopped (see the class comment); `reason`
  /// goes into its status. Completion: `void(CancelOutcome)`, once the
  /// dispatcher has acted on it (for a running job: once its worker was
  /// asked, not once it stopped; its status says when).
  template <class Token>
  auto async_cancel(std::string job_id, std::string reason, Token&& token) {
    return asio::async_initiate<Token, void(CancelOutcome)>(
        [impl = impl_](auto handler, std::string id, std::string why) {
          CompletionHandler<void(CancelOutcome)> erased(std::move(handler), impl->strand);
          asio::dispatch(impl->strand, [impl, id = std::move(id), why = std::move(why), h = std::move(erased)]() mutable {
            h.complete(impl->cancel(id, std::move(why)));
          });
        },
        token, std::move(job_id), std::move(reason));
  }

  /// A peer dispatcher on the same source runs these jobs although their
  /// deliveries went back to the source (see DispatcherOptions::peer_hold):
  /// a redelivery of one here waits for it. Say it again while it holds
  /// them. Thread-safe.
  void held_elsewhere(std::vector<std::string> job_ids) {
    asio::post(impl_->strand, [impl = impl_, ids = std::move(job_ids)] { impl->on_held_elsewhere(ids); });
  }

  /// A peer published the statuses of these jobs: a redelivery of one here
  /// (waiting for it, or arriving within finished_record_ttl) is acked
  /// without a run. One running here already is left to finish, and a
  /// delivery not marked redelivered (published anew) runs. Thread-safe.
  void settled_elsewhere(std::vector<std::string> job_ids) {
    asio::post(impl_->strand, [impl = impl_, ids = std::move(job_ids)] { impl->on_settled_elsewhere(ids); });
  }

  /// Workers registered with a peer dispatcher on the same source carry
  /// these jobs' runs: a redelivery of one here, waiting for its carrier,
  /// goes back to the source (after pass_back_delay) to reach that peer.
  /// Said again while it holds. Thread-safe.
  void carried_elsewhere(std::vector<std::string> job_ids) {
    asio::post(impl_->strand, [impl = impl_, ids = std::move(job_ids)] { impl->on_carried_elsewhere(ids); });
  }

  /// Thread-safe.
  DispatcherStats stats() const noexcept {
    const auto& c = impl_->counters;
    auto get = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    return DispatcherStats{get(c.received),      get(c.succeeded),     get(c.failed),
                           get(c.lost),          get(c.dead_lettered), get(c.handed_back),
                           get(c.not_accepted),  get(c.in_flight),     get(c.duplicates),
                           get(c.cancelled),     get(c.adopted),       get(c.settled_elsewhere),
                           get(c.passed_back)};
  }

 private:
  using delivery_type = typename Source::delivery_type;
  using lease_type = typename Pool::Lease;
  using Clock = std::chrono::steady_clock;

  static constexpr bool reports_accepted = worker_transport_traits<Transport>::reports_accepted;
  static constexpr bool monitors_runs = worker_transport_traits<Transport>::monitors_runs;
  static constexpr bool can_try_acquire = requires(Pool& p, const Labels& l) {
    { p.try_acquire(l) } -> std::same_as<lease_type>;
  };
  static constexpr bool can_claim = requires(Pool& p, std::string_view id) {
    { p.claim(id) } -> std::same_as<lease_type>;
  };

  enum class Stage { placing, running, publishing, done };

  // The deadlines of a running job (see Impl::deadlines).
  enum Deadline : std::size_t { accept_deadline, run_deadline, deadline_kinds };

  // One job from delivery to settlement. Handlers hold it by shared_ptr, so a
  // late completion (after the job was settled another way) finds it intact
  // and sees from `stage` and `attempts` that it has nothing left to do.
  struct Context : std::enable_shared_from_this<Context> {
    explicit Context(delivery_type d) : delivery(std::move(d)) {}
    const Job& job() const { return delivery.job(); }

    delivery_type delivery;
    std::vector<delivery_type> attached;  // more deliveries of this job id, settled with it
    Stage stage = Stage::placing;
    bool waiting = false;  // queued in the pool for a slot, or for its carrier
    bool awaiting_carrier = false;  // redelivered: waiting for a worker to say it carries it
    bool carrier_waited = false;    // it did (once is enough)
    lease_type lease;
    std::shared_ptr<const WorkerInfo> worker;  // kept for the transport call
    asio::cancellation_signal cancel;          // the pending acquire or run
    std::uint32_t attempts = 0;        // offers made (the current run's number)
    std::uint32_t failed_offers = 0;   // offers no worker answered (see max_attempts)
    // The attempt whose worker has said anything (it has the job), written
    // from the transport's thread and read when the accept deadline passes:
    // no hop to the strand per job for it.
    std::atomic<std::uint32_t> accepted_attempt{0};
    bool accept_timed_out = false;
    std::uint32_t placement_periods = 0;
    std::string placement_failure;  // non-empty: the placement timer gave up
    std::unique_ptr<asio::steady_timer> placement_timer;
    std::array<std::size_t, deadline_kinds> deadline_places =
        detail::DeadlineHeap<Context, deadline_kinds>::unplaced();  // in Impl::deadlines
    std::unique_ptr<asio::steady_timer> retry_timer;
    std::unique_ptr<asio::steady_timer> cancel_timer;  // the cancel_grace of a running job
    std::string cancel_reason;  // non-empty: a cancel was asked for
    std::chrono::milliseconds retry_delay{0};
    std::string dead_letter_reason;  // non-empty: dead-letter once the status is out
    std::uint64_t run = 0;  // this dispatcher's number for the job (its status id, unless a worker's run names it)
    std::size_t active_place = 0;  // its index in Impl::active
    JobResult result;
    std::chrono::system_clock::time_point received_at;
    std::chrono::system_clock::time_point started_at;
  };
  using ContextPtr = std::shared_ptr<Context>;

  struct Counters {
    std::atomic<std::uint64_t> received{0}, succeeded{0}, failed{0}, lost{0}, dead_lettered{0}, handed_back{0},
        not_accepted{0}, in_flight{0}, duplicates{0}, cancelled{0}, adopted{0}, settled_elsewhere{0}, passed_back{0};
  };

  static std::string describe(std::chrono::milliseconds d) {
    return d.count() % 1000 == 0 ? std::to_string(d.count() / 1000) + " s" : std::to_string(d.count()) + " ms";
  }

  // A per-process token, so that status ids of two dispatchers (an
  // orchestrator and its successor after a restart) never collide.
  static std::string random_token() {
    std::random_device device;
    const std::uint64_t value = (std::uint64_t{device()} << 32) ^ device();
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 0; i < 16; ++i) out[static_cast<std::size_t>(i)] = digits[(value >> (60 - 4 * i)) & 0xf];
    return out;
  }

  // "run-" and 16 hex digits of FNV-1a over the job id, the worker id and
  // the run's start (ns): the same for every report of one run.
  static std::string run_status_id(const std::string& job_id, const std::string& worker_id,
                                   std::chrono::system_clock::time_point started) {
    std::uint64_t hash = 0xcbf29ce484222325ULL;
    auto mix = [&hash](std::string_view bytes) {
      const std::string length = std::to_string(bytes.size()) + ":";  // so ("ab","c") != ("a","bc")
      for (const std::string_view part : {std::string_view(length), bytes}) {
        for (const char c : part) {
          hash ^= static_cast<unsigned char>(c);
          hash *= 0x100000001b3ULL;
        }
      }
    };
    mix(job_id);
    mix(worker_id);
    mix(std::to_string(std::chrono::duration_cast<std::chrono::nanoseconds>(started.time_since_epoch()).count()));
    static constexpr char digits[] = "0123456789abcdef";
    std::string out = "run-0000000000000000";
    for (int i = 0; i < 16; ++i) out[static_cast<std::size_t>(4 + i)] = digits[(hash >> (60 - 4 * i)) & 0xf];
    return out;
  }

  struct Impl : std::enable_shared_from_this<Impl> {
    Impl(executor_type s, Source& src, Transport& t, Sink& k, Pool& p, DispatcherOptions o, Observer obs)
        : strand(std::move(s)), source(src), transport(t), sink(k), pool(p), options(o), observer(std::move(obs)),
          token(random_token()),
          finished(o.finished_record_size, o.finished_record_ttl),
          cancels(o.cancel_record_size, o.cancel_record_ttl),
          held_by_peers(o.finished_record_size, o.peer_hold),
          settled_by_peers(o.finished_record_size, o.finished_record_ttl),
          carried_by_peers(o.finished_record_size, o.peer_hold), deadline_timer(strand) {}

    executor_type strand;
    Source& source;
    Transport& transport;
    Sink& sink;
    Pool& pool;
    DispatcherOptions options;
    Observer observer;
    Counters counters;
    const std::string token;
    std::uint64_t next_run = 1;

    bool started = false;
    bool stopping = false;
    bool forced = false;
    std::atomic<bool> abandoned{false};  // the Dispatcher is gone
    bool source_closed = false;
    bool receive_pending = false;
    bool pumping = false;    // in pump(): a nested call only asks for another round
    bool pump_again = false;
    asio::cancellation_signal receive_cancel;
    std::size_t waiting = 0;   // contexts queued in the pool
    std::size_t attached = 0;  // deliveries attached to another of the same job id
    std::size_t prefetch_told = std::numeric_limits<std::size_t>::max();
    std::vector<ContextPtr> active;  // every context taken and not done; each knows its place
    std::unordered_map<std::string, ContextPtr> by_job_id;  // valid jobs in flight
    std::unordered_set<ContextPtr> awaiting_carrier;       // see DispatcherOptions::carrier_wait
    // A sink that publishes batches (PublishesBatches): the statuses that
    // finish before the strand gets round to sending them (one post later)
    // go out in one call. Nothing waits for a confirm: under load the
    // batches grow with the strand's queue; at light load each is one status.
    std::vector<ContextPtr> outbox;
    bool flush_posted = false;
    detail::RecentIds<bool> finished;  // job ids whose status was confirmed (finished_record_*)
    detail::RecentIds<std::string> cancels;  // cancel reasons of jobs not seen yet (cancel_record_*)
    detail::RecentIds<bool> held_by_peers;   // job ids a peer said it runs, within peer_hold
    detail::RecentIds<bool> settled_by_peers;  // job ids whose status a peer published (finished_record_*)
    detail::RecentIds<bool> carried_by_peers;  // job ids a peer's worker carries, within peer_hold
    // Every running job's accept and run deadlines, under one timer set for
    // the earliest (re-armed only when an earlier one comes).
    detail::DeadlineHeap<Context, deadline_kinds> deadlines;
    asio::steady_timer deadline_timer;
    Clock::time_point deadline_armed = Clock::time_point::max();  // max: not waiting
    std::unique_ptr<asio::steady_timer> stop_timer;
    std::unordered_set<asio::steady_timer*> parked;  // the cooldowns of refused slots (see park)
    std::vector<CompletionHandler<void(std::error_code)>> stop_handlers;

    std::size_t limit() const {
      const std::size_t capacity = pool.alive_capacity();
      return options.max_in_flight ? std::min(capacity, options.max_in_flight) : capacity;
    }
    // Waiting jobs that do not count against the window.
    std::size_t waiting_aside() const { return std::min(waiting, options.max_waiting); }
    std::size_t in_window() const { return active.size() - waiting_aside(); }

    // Out of `active` in O(1): the last context takes its place.
    void leave_active(Context& ctx) {
      const std::size_t place = ctx.active_place;
      if (place >= active.size() || active[place].get() != &ctx) return;  // not (or no longer) in it
      if (place + 1 != active.size()) {
        active[place] = std::move(active.back());
        active[place]->active_place = place;
      }
      active.pop_back();
    }

    // The token and the run's number: unique to this dispatcher's process.
    std::string status_id(std::uint64_t run) const {
      char digits[20];
      const auto end = std::to_chars(std::begin(digits), std::end(digits), run).ptr;
      std::string id;
      id.reserve(token.size() + 1 + static_cast<std::size_t>(end - digits));
      id.append(token).append(1, '-').append(digits, end);
      return id;
    }

    void update_in_flight() { counters.in_flight.store(active.size() + attached, std::memory_order_relaxed); }

    void tell_prefetch() {
      if constexpr (PrefetchControl<Source>) {
        const std::size_t n = limit() + waiting_aside() + attached;
        if (n != prefetch_told) {
          prefetch_told = n;
          source.set_prefetch(n);
        }
      }
    }

    // Takes more deliveries if there is room; called whenever room may have
    // appeared. A take may settle a job at once (a duplicate, an invalid
    // delivery) and so call pump again: that call only marks another round
    // here, so what is ready is taken in a loop, not by recursion.
    void pump() {
      if (pumping) {
        pump_again = true;
        return;
      }
      pumping = true;
      do {
        pump_again = false;
        pump_once();
      } while (pump_again);
      pumping = false;
    }

    void pump_once() {
      if (abandoned || stopping || !started || source_closed) return;
      tell_prefetch();
      // Read once: the pool's live capacity changes on other threads, and a
      // second read smaller than the window would wrap the room around.
      const std::size_t room = limit();
      if (receive_pending || in_window() >= room) return;
      if constexpr (TakesReady<Source>) {
        // What the source holds already is taken here, with no hop through
        // the strand; only an empty source is waited on.
        std::vector<delivery_type> ready = source.try_receive_some(room - in_window());
        if (!ready.empty()) {
          for (auto& d : ready) take(std::move(d));
          pump_again = true;  // more may be ready, and room left
          return;
        }
      }
      receive_pending = true;
      if constexpr (ReceivesBatches<Source>) {
        // Every free place of the window in one completion.
        source.async_receive_some(
            room - in_window(),
            asio::bind_cancellation_slot(
                receive_cancel.slot(),
                asio::bind_executor(strand, [self = this->shared_from_this()](std::error_code ec,
                                                                              std::vector<delivery_type> ds) mutable {
                  if (!self->received(ec)) return;
                  self->take_all(ds);
                })));
      } else {
        source.async_receive(asio::bind_cancellation_slot(
            receive_cancel.slot(),
            asio::bind_executor(strand, [self = this->shared_from_this()](std::error_code ec, delivery_type d) mutable {
              if (!self->received(ec)) return;
              self->take(std::move(d));
              self->pump();
            })));
      }
    }

    // A batch from the source, in order: pumps (which may take more) once
    // the whole batch is taken.
    void take_all(std::vector<delivery_type>& deliveries) {
      const bool nested = std::exchange(pumping, true);
      for (auto& d : deliveries) take(std::move(d));
      pumping = nested;
      pump();
    }

    // A receive completed; false when there is nothing to take.
    bool received(std::error_code ec) {
      receive_pending = false;
      if (abandoned) return false;
      if (ec) {
        // Sources reconnect by themselves; an error here means no more deliveries.
        source_closed = true;
        maybe_finish_stop();
        return false;
      }
      return true;
    }

    void take(delivery_type delivery) {
      if (stopping) {
        source.reject(delivery, Disposition::requeue, "dispatcher stopping");
        counters.handed_back.fetch_add(1, std::memory_order_relaxed);
        maybe_finish_stop();
        return;
      }
      counters.received.fetch_add(1, std::memory_order_relaxed);
      std::string reason = invalid_reason(delivery);
      if (reason.empty() && is_duplicate(delivery)) return;
      auto ctx = std::make_shared<Context>(std::move(delivery));
      ctx->received_at = std::chrono::system_clock::now();
      ctx->run = next_run++;
      ctx->active_place = active.size();
      active.push_back(ctx);
      update_in_flight();
      observer.on_received(ctx->job());
      if (!reason.empty()) {
        dead_letter(ctx, std::move(reason));
      } else if (const std::string* why = cancels.find(ctx->job().id)) {
        // Its cancel came first.
        by_job_id.emplace(ctx->job().id, ctx);
        ctx->cancel_reason = *why;
        cancels.erase(ctx->job().id);
        settle_cancelled(ctx, "cancelled before it ran (" + ctx->cancel_reason + ")");
      } else {
        by_job_id.emplace(ctx->job().id, ctx);
        place(ctx);
      }
    }

    CancelOutcome cancel(const std::string& id, std::string reason) {
      if (reason.empty()) reason = "cancel requested";
      auto it = by_job_id.find(id);
      if (it == by_job_id.end()) {
        if (finished.find(id)) return CancelOutcome::finished;
        cancels.put(id, std::move(reason));
        return CancelOutcome::remembered;
      }
      const ContextPtr ctx = it->second;
      if (ctx->stage == Stage::publishing || ctx->stage == Stage::done) return CancelOutcome::finished;
      if (!ctx->cancel_reason.empty()) return ctx->stage == Stage::running ? CancelOutcome::stopping
                                                                           : CancelOutcome::cancelled;
      ctx->cancel_reason = std::move(reason);
      if (ctx->stage == Stage::placing) {
        ctx->cancel.emit(asio::cancellation_type::terminal);  // out of the pool's queue
        stop_awaiting_carrier(ctx);
        leave_pool_queue(ctx);
        settle_cancelled(ctx, "cancelled before it ran (" + ctx->cancel_reason + ")");
        return CancelOutcome::cancelled;
      }
      // Running: the transport asks the worker to stop it and reports the
      // result it then sends; after the grace, the run is let go.
      const std::uint32_t attempt = ctx->attempts;
      ctx->cancel.emit(asio::cancellation_type::partial);
      if (running(ctx, attempt) && options.cancel_grace.count() > 0) {
        if (!ctx->cancel_timer) ctx->cancel_timer = std::make_unique<asio::steady_timer>(strand);
        ctx->cancel_timer->expires_after(options.cancel_grace);
        ctx->cancel_timer->async_wait([self = this->shared_from_this(), ctx, attempt](std::error_code ec) {
          if (ec || !self->running(ctx, attempt)) return;
          ctx->cancel.emit(asio::cancellation_type::terminal);
          self->settle_cancelled(ctx, "cancelled while running on worker " + ctx->worker->id + " (" +
                                          ctx->cancel_reason + "); the worker did not confirm within " +
                                          describe(self->options.cancel_grace));
        });
      }
      return CancelOutcome::stopping;
    }

    void settle_cancelled(const ContextPtr& ctx, std::string error, JobResult result = {}) {
      counters.cancelled.fetch_add(1, std::memory_order_relaxed);
      result.success = false;
      result.cancelled = true;
      result.error = std::move(error);
      finalize(ctx, std::move(result));
    }

    void leave_pool_queue(const ContextPtr& ctx) {
      if (!ctx->waiting) return;
      ctx->waiting = false;
      --waiting;
    }

    // One run per job id: attaches `delivery` to the run of its job id in
    // flight, or acks it when that job's status was confirmed recently.
    bool is_duplicate(delivery_type& delivery) {
      const std::string& id = delivery.job().id;
      if (auto it = by_job_id.find(id); it != by_job_id.end()) {
        it->second->attached.push_back(std::move(delivery));
        ++attached;
        update_in_flight();
        counters.duplicates.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      if (finished.find(id)) {
        source.ack(delivery);
        counters.duplicates.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      // Only a redelivery: a peer's word never drops a job published anew.
      if (delivery.job().redelivered && settled_by_peers.find(id)) {
        source.ack(delivery);
        counters.settled_elsewhere.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
      return false;
    }

    static std::string invalid_reason(const delivery_type& delivery) {
      if constexpr (ReportsInvalid<delivery_type>) {
        std::string_view reason = delivery.invalid_reason();
        if (!reason.empty()) return std::string(reason);
      }
      if (delivery.job().id.empty()) return "jobId is missing or empty";
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
      if constexpr (can_claim) {
        if (claim(ctx)) return;
        if (ctx->job().redelivered && !ctx->carrier_waited && options.carrier_wait.count() > 0) {
          await_carrier(ctx);
          return;
        }
      }
      if constexpr (can_try_acquire) {
        if (lease_type lease = pool.try_acquire(ctx->job().required_labels)) {
          on_lease(ctx, {}, std::move(lease));
          return;
        }
        // Nothing free for it now: it waits aside, out of the window.
        ctx->waiting = true;
        ++waiting;
        tell_prefetch();
      }
      arm_placement_timer(ctx);
      auto handler = asio::bind_cancellation_slot(
          ctx->cancel.slot(),
          asio::bind_executor(strand, [self = this->shared_from_this(), ctx](std::error_code ec,
                                                                             lease_type lease) mutable {
            self->on_lease(ctx, ec, std::move(lease));
          }));
      // A pool that orders its waiters by priority (WorkerPool) is told the job's.
      const Job& job = ctx->job();
      if constexpr (requires { pool.async_acquire(job.required_labels, job.priority, std::move(handler)); }) {
        pool.async_acquire(job.required_labels, job.priority, std::move(handler));
      } else {
        pool.async_acquire(job.required_labels, std::move(handler));
      }
    }

    // Sends the job to the worker that carries it, if one does: that worker
    // attaches to its run. True when it did.
    bool claim(const ContextPtr& ctx) {
      lease_type lease = pool.claim(ctx->job().id);
      if (!lease) return false;
      stop_awaiting_carrier(ctx);
      ctx->carrier_waited = true;
      counters.adopted.fetch_add(1, std::memory_order_relaxed);
      if constexpr (requires { observer.on_adopted(ctx->job(), *lease.worker_info()); })
        observer.on_adopted(ctx->job(), *lease.worker_info());
      on_lease(ctx, {}, std::move(lease));
      return true;
    }

    // A redelivered job may still run on a worker that has not registered
    // here yet: it waits aside (out of the window) for carrier_wait, and
    // each change in the pool (a worker registering, answering) tries again.
    void await_carrier(const ContextPtr& ctx) {
      ctx->carrier_waited = true;
      ctx->awaiting_carrier = true;
      ctx->waiting = true;
      ++waiting;
      awaiting_carrier.insert(ctx);
      tell_prefetch();
      if (!ctx->placement_timer) ctx->placement_timer = std::make_unique<asio::steady_timer>(strand);
      if (carried_by_peers.find(ctx->job().id)) {
        pass_back_later(ctx);
        return;
      }
      wait_for_carrier(ctx, options.carrier_wait);
    }

    // Its carrier registered with a peer: back to the source, to reach it.
    void pass_back_later(const ContextPtr& ctx) {
      ctx->placement_timer->expires_after(options.pass_back_delay);
      ctx->placement_timer->async_wait([self = this->shared_from_this(), ctx](std::error_code ec) {
        if (ec || self->abandoned || ctx->stage != Stage::placing || !ctx->awaiting_carrier) return;
        self->stop_awaiting_carrier(ctx);
        if constexpr (requires { self->observer.on_passed_back(ctx->job()); }) self->observer.on_passed_back(ctx->job());
        self->counters.passed_back.fetch_add(1 + ctx->attached.size(), std::memory_order_relaxed);
        self->forget_job_id(ctx);  // before reject, which may empty the delivery
        self->source.reject(ctx->delivery, Disposition::requeue, "its worker is registered with another dispatcher");
        for (auto& delivery : ctx->attached)
          self->source.reject(delivery, Disposition::requeue, "its worker is registered with another dispatcher");
        self->done(ctx);
      });
    }

    void on_carried_elsewhere(const std::vector<std::string>& ids) {
      if (abandoned) return;
      for (const auto& id : ids) {
        carried_by_peers.put(id, true);
        auto it = by_job_id.find(id);
        if (it == by_job_id.end()) continue;
        const ContextPtr ctx = it->second;
        if (ctx->stage == Stage::placing && ctx->awaiting_carrier) pass_back_later(ctx);
      }
    }

    // Waits `period`, then again while a peer says it runs the job (peer_hold).
    void wait_for_carrier(const ContextPtr& ctx, std::chrono::milliseconds period) {
      ctx->placement_timer->expires_after(period);
      ctx->placement_timer->async_wait([self = this->shared_from_this(), ctx](std::error_code ec) {
        if (ec || self->abandoned || ctx->stage != Stage::placing || !ctx->awaiting_carrier) return;
        if (self->held_by_peers.find(ctx->job().id)) {
          self->wait_for_carrier(ctx, self->options.peer_hold);
          return;
        }
        self->stop_awaiting_carrier(ctx);
        self->place(ctx);  // nobody claimed it: it runs like any other job
      });
    }

    void on_held_elsewhere(const std::vector<std::string>& ids) {
      if (abandoned) return;
      for (const auto& id : ids) held_by_peers.put(id, true);
    }

    // A peer's status is out: a delivery waiting here is acked, a later one
    // is a duplicate (the finished record).
    void on_settled_elsewhere(const std::vector<std::string>& ids) {
      if (abandoned) return;
      for (const auto& id : ids) {
        held_by_peers.erase(id);
        auto it = by_job_id.find(id);
        if (it == by_job_id.end()) {
          settled_by_peers.put(id, true);
          continue;
        }
        const ContextPtr ctx = it->second;
        // Running here: let it finish. Not redelivered: a job published anew.
        if (ctx->stage != Stage::placing || !ctx->job().redelivered) continue;
        settled_by_peers.put(id, true);
        ctx->cancel.emit(asio::cancellation_type::terminal);  // out of the pool's queue
        stop_awaiting_carrier(ctx);
        leave_pool_queue(ctx);
        counters.settled_elsewhere.fetch_add(1 + ctx->attached.size(), std::memory_order_relaxed);
        if constexpr (requires { observer.on_settled_elsewhere(ctx->job()); }) observer.on_settled_elsewhere(ctx->job());
        source.ack(ctx->delivery);
        ack_all(ctx->attached);
        observer.on_settled(ctx->job());
        done(ctx);
      }
    }

    // The duplicates attached to a job: one call when the source settles
    // batches (SettlesBatches).
    void ack_all(std::vector<delivery_type>& deliveries) {
      if constexpr (SettlesBatches<Source>) {
        source.ack(std::span<delivery_type>(deliveries));
      } else {
        for (auto& delivery : deliveries) source.ack(delivery);
      }
    }

    void stop_awaiting_carrier(const ContextPtr& ctx) {
      if (!ctx->awaiting_carrier) return;
      ctx->awaiting_carrier = false;
      awaiting_carrier.erase(ctx);
      leave_pool_queue(ctx);
    }

    void retry_carried() {
      if constexpr (can_claim) {
        if (awaiting_carrier.empty()) return;
        const std::vector<ContextPtr> candidates(awaiting_carrier.begin(), awaiting_carrier.end());
        for (const auto& ctx : candidates)
          if (ctx->awaiting_carrier && ctx->stage == Stage::placing) (void)claim(ctx);
      }
    }

    void arm_placement_timer(const ContextPtr& ctx) {
      if (options.placement_timeout.count() <= 0) return;
      if (!ctx->placement_timer) ctx->placement_timer = std::make_unique<asio::steady_timer>(strand);
      ctx->placement_timer->expires_after(options.placement_timeout);  // cancels an earlier period's wait
      ctx->placement_timer->async_wait([self = this->shared_from_this(), ctx](std::error_code ec) {
        if (ec || self->abandoned || ctx->stage != Stage::placing) return;
        ++ctx->placement_periods;
        std::string missing = self->unoffered(ctx->job().required_labels);
        if (missing.empty()) {  // its workers exist and are busy: keep waiting
          self->arm_placement_timer(ctx);
          return;
        }
        ctx->placement_failure = "no live worker offers " + missing + " (waited " +
                                 describe(self->options.placement_timeout * ctx->placement_periods) + " for one)";
        ctx->cancel.emit(asio::cancellation_type::terminal);
      });
    }

    // Empty when a live worker offers every label in `required`; else the
    // labels nobody offers (or the whole set, when each is offered by someone
    // but no worker offers them all).
    std::string unoffered(const Labels& required) const {
      if constexpr (requires { pool.snapshot(); }) {
        std::vector<std::shared_ptr<const WorkerInfo>> live;
        for (const auto& w : pool.snapshot())
          if (w.state == WorkerState::free || w.state == WorkerState::busy || w.state == WorkerState::registering)
            live.push_back(w.info);
        std::string missing;
        bool any_matches = false;
        for (const auto& info : live) any_matches = any_matches || labels_match(required, info->labels);
        if (any_matches) return {};
        for (const auto& [key, value] : required) {
          bool offered = false;
          for (const auto& info : live) {
            auto it = info->labels.find(key);
            offered = offered || (it != info->labels.end() && it->second == value);
          }
          if (!offered) missing += (missing.empty() ? "" : ", ") + key + "=" + value;
        }
        if (!missing.empty()) return missing;
        return required.empty() ? std::string("any slot (no live worker)") : "all of " + to_string(required);
      } else {
        return to_string(required);
      }
    }

    void on_lease(const ContextPtr& ctx, std::error_code ec, lease_type lease) {
      if (abandoned || ctx->stage != Stage::placing) return;
      leave_pool_queue(ctx);
      if (ctx->placement_timer) ctx->placement_timer->cancel();
      if (ec) {
        if (!ctx->placement_failure.empty())
          fail(ctx, ctx->placement_failure);
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
      ctx->accept_timed_out = false;
      ctx->started_at = std::chrono::system_clock::now();
      const std::uint32_t attempt = ++ctx->attempts;
      observer.on_assigned(ctx->job(), *ctx->worker);
      arm_run_timers(ctx);

      ProgressCallback progress;
      const bool watch_accept = reports_accepted && options.accept_timeout.count() > 0;
      if (Observer::wants_progress || watch_accept) {
        progress = [weak = this->weak_from_this(), weak_ctx = std::weak_ptr<Context>(ctx), attempt,
                    watch_accept](const ProgressEvent& event) {
          // Any event means the worker has the job.
          if (watch_accept)
            if (auto c = weak_ctx.lock(); c && c->accepted_attempt.load(std::memory_order_relaxed) != attempt)
              c->accepted_attempt.store(attempt, std::memory_order_release);
          if constexpr (Observer::wants_progress)
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

    bool running(const ContextPtr& ctx, std::uint32_t attempt) const {
      return !abandoned && ctx->stage == Stage::running && attempt == ctx->attempts;
    }

    void arm_run_timers(const ContextPtr& ctx) {
      const auto now = Clock::now();
      if (reports_accepted && options.accept_timeout.count() > 0)
        set_deadline(*ctx, accept_deadline, now + options.accept_timeout);
      const auto timeout = run_timeout(*ctx);
      if (timeout.count() <= 0) return;
      set_deadline(*ctx, run_deadline,
                   now + timeout + options.run_timeout_grace +
                       (reports_accepted ? std::chrono::milliseconds(0) : options.accept_timeout));
    }

    std::chrono::milliseconds run_timeout(const Context& ctx) const {
      return ctx.job().timeout.count() > 0 ? ctx.job().timeout : options.default_job_timeout;
    }

    void set_deadline(Context& ctx, Deadline kind, Clock::time_point at) {
      deadlines.set(ctx, kind, at);
      if (at >= deadline_armed) return;  // the timer fires before it anyway
      deadline_armed = at;
      deadline_timer.expires_at(at);  // an earlier wait completes aborted
      deadline_timer.async_wait([self = this->shared_from_this()](std::error_code ec) {
        if (!ec) self->on_deadline();
      });
    }

    void on_deadline() {
      deadline_armed = Clock::time_point::max();
      if (abandoned) return;
      const auto now = Clock::now();
      while (!deadlines.empty() && deadlines.top().at <= now) {
        const auto expired = deadlines.pop();
        const ContextPtr ctx = expired.item->shared_from_this();
        if (ctx->stage != Stage::running) continue;
        if (expired.kind == accept_deadline) {
          if (ctx->accepted_attempt.load(std::memory_order_acquire) == ctx->attempts) continue;
          // Taken back: the completion (operation_aborted) offers it elsewhere.
          ctx->accept_timed_out = true;
          ctx->cancel.emit(asio::cancellation_type::terminal);
        } else {
          ctx->cancel.emit(asio::cancellation_type::terminal);  // tell the worker to stop it
          lost(ctx, "it ran past its timeout of " + describe(run_timeout(*ctx)) + " plus a grace of " +
                        describe(options.run_timeout_grace) + ", and was cancelled");
        }
      }
      if (!deadlines.empty()) {
        const auto next = deadlines.top();  // a copy: set() moves entries
        set_deadline(*next.item, static_cast<Deadline>(next.kind), next.at);
      }
    }

    void on_result(const ContextPtr& ctx, std::uint32_t attempt, std::error_code ec, JobResult result) {
      // Already settled another way (worker declared lost, handed back at a stop deadline).
      if (!running(ctx, attempt)) return;
      if (!ctx->cancel_reason.empty() && (ec || !result.success)) {
        // Stopped as asked (or failed meanwhile: it is cancelled all the same;
        // a job that succeeded before the cancel took effect stays a success).
        const std::string worker_id = ctx->worker->id;
        std::string said = ec ? std::string() : std::move(result.error);
        if (ec) result = JobResult{};
        settle_cancelled(ctx,
                         "cancelled while running on worker " + worker_id + " (" + ctx->cancel_reason + ")" +
                             (said.empty() ? std::string() : "; the worker said: " + said),
                         std::move(result));
        return;
      }
      if (ctx->accept_timed_out && ec == asio::error::operation_aborted) {
        ec = make_error_code(errc::worker_unreachable);
        result.error = "worker " + ctx->worker->id + " did not accept the job within " +
                       describe(options.accept_timeout);
      }
      if (ec && never_accepted(ec)) {
        counters.not_accepted.fetch_add(1, std::memory_order_relaxed);
        const auto worker = ctx->worker;
        observer.on_not_accepted(ctx->job(), *worker, ec, result.error);
        stop_run_timers(ctx);
        // One failed offer says little about the worker (only missed pings
        // declare it dead): its slot rests, and the job goes elsewhere.
        if (options.refused_slot_cooldown.count() > 0)
          park(std::move(ctx->lease));
        else
          ctx->lease.release();
        if (ec != errc::worker_refused) ++ctx->failed_offers;
        if (ctx->failed_offers >= options.max_attempts) {
          fail(ctx, "no worker accepted the job after " + std::to_string(ctx->failed_offers) + " attempts; last, " +
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

    void stop_run_timers(const ContextPtr& ctx) {
      deadlines.remove(*ctx, accept_deadline);
      deadlines.remove(*ctx, run_deadline);
      if (ctx->cancel_timer) ctx->cancel_timer->cancel();
    }

    // Holds a slot that did not take a job for the cooldown, then returns it
    // (its release, or the timer's destruction with the io_context, gives it
    // back exactly once) and looks for work for it. A completed stop, or the
    // dispatcher's destruction, ends the cooldown early (cancel_idle_timers).
    void park(lease_type lease) {
      auto timer = std::make_shared<asio::steady_timer>(strand, options.refused_slot_cooldown);
      parked.insert(timer.get());
      timer->async_wait([timer, weak = this->weak_from_this(),
                         held = std::make_shared<lease_type>(std::move(lease))](std::error_code) mutable {
        held->release();
        if (auto self = weak.lock()) {
          self->parked.erase(timer.get());
          if (!self->abandoned) self->pump();
        }
      });
    }

    void on_pool_event(const WorkerEvent& event) {
      if (abandoned) return;
      // Missed pings say the ping path is silent; a transport that watches its
      // runs knows better whether they are (and reports the ones that are).
      const bool pings_only = monitors_runs && !event.removed && event.to == WorkerState::dead;
      if (event.leases_lost && !pings_only) {
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
      retry_carried();
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
      stop_run_timers(ctx);
      ctx->stage = Stage::publishing;
      const Job& job = ctx->job();
      result.job_id = job.id;
      // Per run, not per job id: a job that runs again (its record expired,
      // another orchestrator) is another run with another status. A result a
      // worker sent is named by its run (job, worker, the run's start), so
      // the same run reported again by another orchestrator (it attached to
      // the run after this one went away) carries the same status id.
      const bool worker_run = !result.worker_id.empty() && result.started_at != std::chrono::system_clock::time_point{};
      result.status_id = worker_run ? run_status_id(job.id, result.worker_id, result.started_at) : status_id(ctx->run);
      if (result.worker_id.empty() && ctx->worker) result.worker_id = ctx->worker->id;
      result.redelivered = job.redelivered;
      result.attempts = ctx->attempts;
      result.received_at = ctx->received_at;
      result.started_at = ctx->started_at;  // this clock's, as received_at (the worker's may be skewed)
      result.finished_at = std::chrono::system_clock::now();
      (result.success ? counters.succeeded : counters.failed).fetch_add(1, std::memory_order_relaxed);
      ctx->result = std::move(result);
      observer.on_finished(job, ctx->result);
      publish(ctx);
    }

    void publish(const ContextPtr& ctx) {
      if constexpr (PublishesBatches<Sink>) {
        // Sent once the strand has run what is queued on it now: the
        // statuses that finish meanwhile go in the same call.
        outbox.push_back(ctx);
        if (!flush_posted) {
          flush_posted = true;
          asio::post(strand, [self = this->shared_from_this()] { self->flush_outbox(); });
        }
      } else {
        publish_one(ctx);
      }
    }

    void publish_one(const ContextPtr& ctx) {
      sink.async_publish(ctx->result,
                         asio::bind_executor(strand, [self = this->shared_from_this(), ctx](std::error_code ec) {
                           self->on_published(ctx, ec);
                         }));
    }

    // The outbox in one call (PublishesBatches), a single status as a single publish.
    void flush_outbox() {
      flush_posted = false;
      std::erase_if(outbox, [](const ContextPtr& ctx) { return ctx->stage != Stage::publishing; });
      if (abandoned || outbox.empty()) return;
      if (outbox.size() == 1) {
        publish_one(outbox.front());
        outbox.clear();
        return;
      }
      struct Batch {
        std::vector<ContextPtr> contexts;
        std::vector<const JobResult*> results;  // the span the sink reads, valid until it completes
      };
      Batch batch;
      batch.contexts.swap(outbox);
      batch.results.reserve(batch.contexts.size());
      for (const auto& ctx : batch.contexts) batch.results.push_back(&ctx->result);
      const std::span<const JobResult* const> results(batch.results);  // moving the vector keeps its buffer
      sink.async_publish_some(
          results, asio::bind_executor(strand, [self = this->shared_from_this(), batch = std::move(batch)](
                                                   std::vector<std::error_code> codes) {
            for (std::size_t i = 0; i < batch.contexts.size(); ++i) {
              // A sink that answers for fewer than it was given failed the rest.
              self->on_published(batch.contexts[i],
                                 i < codes.size() ? codes[i] : std::error_code(errc::sink_unavailable));
            }
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
      if (!ctx->dead_letter_reason.empty()) {
        source.reject(ctx->delivery, Disposition::dead_letter, ctx->dead_letter_reason);
      } else {
        finished.put(ctx->job().id, true);
        source.ack(ctx->delivery);
      }
      ack_all(ctx->attached);
      observer.on_settled(ctx->job());
      done(ctx);
    }

    void hand_back(const ContextPtr& ctx) {
      ctx->lease.release();
      observer.on_handed_back(ctx->job());  // before reject: it may empty the delivery
      forget_job_id(ctx);
      source.reject(ctx->delivery, Disposition::requeue, "dispatcher stopping");
      for (auto& delivery : ctx->attached) source.reject(delivery, Disposition::requeue, "dispatcher stopping");
      counters.handed_back.fetch_add(1 + ctx->attached.size(), std::memory_order_relaxed);
      done(ctx);
    }

    void done(const ContextPtr& ctx) {
      ctx->stage = Stage::done;
      stop_awaiting_carrier(ctx);
      leave_pool_queue(ctx);
      if (ctx->placement_timer) ctx->placement_timer->cancel();
      if (ctx->retry_timer) ctx->retry_timer->cancel();
      stop_run_timers(ctx);
      forget_job_id(ctx);
      attached -= ctx->attached.size();
      ctx->attached.clear();
      leave_active(*ctx);
      update_in_flight();
      pump();
      maybe_finish_stop();
    }

    void forget_job_id(const ContextPtr& ctx) {
      if (auto it = by_job_id.find(ctx->job().id); it != by_job_id.end() && it->second == ctx) by_job_id.erase(it);
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
      for (const auto& ctx : placing) {
        if (ctx->awaiting_carrier)
          hand_back(ctx);  // no acquire to cancel: it waits on a timer
        else
          ctx->cancel.emit(asio::cancellation_type::terminal);
      }
      stop_timer = std::make_unique<asio::steady_timer>(strand, deadline);
      stop_timer->async_wait([self = this->shared_from_this()](std::error_code ec) {
        if (!ec) self->force_stop();
      });
      maybe_finish_stop();
    }

    // The deadline passed: hand back whatever has no result. A job whose
    // status is being published keeps going: handed back, it would run again
    // although its status may already be durable.
    void force_stop() {
      if (abandoned || stop_handlers.empty()) return;
      forced = true;
      std::vector<ContextPtr> left;
      for (const auto& ctx : active)
        if (ctx->stage == Stage::placing || ctx->stage == Stage::running) left.push_back(ctx);
      for (const auto& ctx : left) {
        // Handed over, not stopped: its next delivery attaches to it.
        if (ctx->stage == Stage::running) ctx->cancel.emit(run_hand_over);
        if (ctx->stage != Stage::done) hand_back(ctx);
      }
      maybe_finish_stop();
    }

    // A completed stop leaves no timer of its own pending on the executor,
    // so that its run() returns: the deadline timer, armed for runs that are
    // over (no deadline is left by then: the check only guards), and the
    // slots resting after a refusal (their leases go back as their cancelled
    // waits complete).
    void cancel_idle_timers() {
      if (deadlines.empty()) {
        deadline_timer.cancel();
        deadline_armed = Clock::time_point::max();
      }
      for (asio::steady_timer* timer : parked) timer->cancel();
    }

    void maybe_finish_stop() {
      if (!stopping || stop_handlers.empty() || (receive_pending && !forced)) return;
      for (const auto& ctx : active)
        if (!forced || ctx->stage != Stage::publishing) return;
      if (stop_timer) stop_timer->cancel();
      cancel_idle_timers();
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
      by_job_id.clear();
      awaiting_carrier.clear();
      for (const auto& ctx : left) {
        ctx->cancel.emit(ctx->stage == Stage::running ? run_hand_over : asio::cancellation_type::terminal);
        if (ctx->placement_timer) ctx->placement_timer->cancel();
        if (ctx->retry_timer) ctx->retry_timer->cancel();
        stop_run_timers(ctx);
        ctx->lease.release();
      }
      deadlines.clear();
      cancel_idle_timers();
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
