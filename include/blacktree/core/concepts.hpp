// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// What the core is parameterised on. Each concept lists the exact
// expressions it requires; the in-memory models in in_memory.hpp satisfy the
// source, transport and sink concepts, WorkerPool and DispatcherObserver the
// last two (checked with static_assert next to each), and
// tests/unit/test_concepts.cpp checks that a type missing any one expression
// is rejected.
//
// Optional capabilities (a source that limits what it takes, a delivery that
// can be invalid) are concepts of their own, found by their expressions, plus
// a trait that declares them: a type that declares a capability and then
// misspells its member fails the main concept, instead of silently losing it.
//
// Common rules for every asynchronous operation below (asio's rules):
//  - the completion handler is never invoked from inside the initiating call;
//    it is invoked as if posted to its associated executor;
//  - if the handler has an associated cancellation slot, the operation should
//    support terminal cancellation through it and then complete with
//    asio::error::operation_aborted (each operation below says what a
//    cancellation leaves behind). The slot's handler may be invoked from
//    another thread than the one completing the operation, so it must be
//    thread-safe with respect to the operation's own completion.
//
// core::CompletionHandler (completion_handler.hpp) keeps a handler of any
// type until the operation completes, following the first rule.

#include <blacktree/core/error.hpp>
#include <blacktree/core/job.hpp>

#include <asio/cancellation_type.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <span>
#include <type_traits>
#include <vector>

namespace blacktree::core {

struct WorkerEvent;  // worker_pool.hpp

namespace detail {

// Minimal handlers ("archetypes") used to state the required expressions.
template <class Delivery>
struct receive_handler_archetype {
  void operator()(std::error_code, Delivery) {}
};
template <class Delivery>
struct receive_some_handler_archetype {
  void operator()(std::error_code, std::vector<Delivery>) {}
};
struct run_handler_archetype {
  void operator()(std::error_code, JobResult) {}
};
struct ping_handler_archetype {
  void operator()(std::error_code, PingReply) {}
};
struct publish_handler_archetype {
  void operator()(std::error_code) {}
};
struct publish_some_handler_archetype {
  void operator()(std::vector<std::error_code>) {}
};
template <class Lease>
struct acquire_handler_archetype {
  void operator()(std::error_code, Lease) {}
};
struct listener_archetype {
  void operator()(const WorkerEvent&) const {}
};

// `T::prefetch_control` / `T::reports_invalid` as a constant, false when T
// declares no such member.
template <class T>
struct declares_prefetch_control : std::false_type {};
template <class T>
  requires requires { typename std::bool_constant<static_cast<bool>(T::prefetch_control)>; }
struct declares_prefetch_control<T> : std::bool_constant<static_cast<bool>(T::prefetch_control)> {};

template <class T>
struct declares_reports_accepted : std::false_type {};
template <class T>
  requires requires { typename std::bool_constant<static_cast<bool>(T::reports_accepted)>; }
struct declares_reports_accepted<T> : std::bool_constant<static_cast<bool>(T::reports_accepted)> {};

template <class T>
struct declares_monitors_runs : std::false_type {};
template <class T>
  requires requires { typename std::bool_constant<static_cast<bool>(T::monitors_runs)>; }
struct declares_monitors_runs<T> : std::bool_constant<static_cast<bool>(T::monitors_runs)> {};

template <class T>
struct declares_receives_batches : std::false_type {};
template <class T>
  requires requires { typename std::bool_constant<static_cast<bool>(T::receives_batches)>; }
struct declares_receives_batches<T> : std::bool_constant<static_cast<bool>(T::receives_batches)> {};

template <class T>
struct declares_takes_ready : std::false_type {};
template <class T>
  requires requires { typename std::bool_constant<static_cast<bool>(T::takes_ready)>; }
struct declares_takes_ready<T> : std::bool_constant<static_cast<bool>(T::takes_ready)> {};

template <class T>
struct declares_publishes_batches : std::false_type {};
template <class T>
  requires requires { typename std::bool_constant<static_cast<bool>(T::publishes_batches)>; }
struct declares_publishes_batches<T> : std::bool_constant<static_cast<bool>(T::publishes_batches)> {};

template <class T>
struct declares_reports_invalid : std::false_type {};
template <class T>
  requires requires { typename std::bool_constant<static_cast<bool>(T::reports_invalid)>; }
struct declares_reports_invalid<T> : std::bool_constant<static_cast<bool>(T::reports_invalid)> {};

}  // namespace detail

// ---------------------------------------------------------------------------
// Optional capabilities, and the traits that declare them (asio style: a
// trait a type can satisfy with a member, or that a program specializes for
// a type it cannot change).

/// A delivery that can tell the message was invalid.
///
/// Required, for `const D d`:
///  - `d.invalid_reason()` -> convertible to `std::string_view`: non-empty when
///    the message could not be turned into a valid job (bad JSON, a missing
///    field). The dispatcher then dead-letters it with that reason, after
///    publishing a failure status if `d.job().id` is known.
template <class D>
concept ReportsInvalid = requires(const D& d) {
  { d.invalid_reason() } -> std::convertible_to<std::string_view>;
};

/// Declares that `D` models ReportsInvalid, so that Delivery<D> fails to
/// compile if it does not. True when `D` has `static constexpr bool
/// reports_invalid = true;`; specialize it for a type you cannot change.
template <class D>
struct delivery_traits {
  static constexpr bool reports_invalid = detail::declares_reports_invalid<D>::value;
};

/// A source that limits how many unsettled deliveries it holds.
///
/// Required, for `S s`, `std::size_t n`:
///  - `s.set_prefetch(n)`: the dispatcher's promise to hold at most `n`
///    unsettled deliveries; a broker-backed source sets its QoS from it so
///    the broker holds the rest. Without it, a source's own buffering is the
///    only limit on what it takes (no back-pressure from the workers).
template <class S>
concept PrefetchControl = requires(S& s, std::size_t n) { s.set_prefetch(n); };

/// A source that hands over several deliveries in one completion.
///
/// Required, for `S s`, `std::size_t n`:
///  - `s.async_receive_some(n, h)`: completes `h(std::error_code,
///    std::vector<delivery_type>)` with at least one and at most `n`
///    deliveries: it waits for the first as async_receive does, then takes
///    whatever else is ready at once. Errors and cancellation as for
///    async_receive (with an empty vector).
/// The dispatcher then takes every free place of its window in one
/// completion (one hop through its strand) instead of one per job. Single
/// async_receive stays required: a source without batches needs nothing new.
template <class S>
concept ReceivesBatches = requires(S& s, std::size_t n) {
  s.async_receive_some(n, detail::receive_some_handler_archetype<typename S::delivery_type>{});
};

/// A source that hands over what it already holds without waiting: the
/// receive's counterpart of asio's `dispatch` to `post`.
///
/// Required, for `S s`, `std::size_t n`:
///  - `s.try_receive_some(n)` -> `std::vector<delivery_type>`: up to `n`
///    deliveries that are ready now, taken at once; empty when none is (or
///    the source is closed, or an async receive is waiting: it goes first).
///    It never waits and never runs a handler.
/// The dispatcher then takes what is ready from its own strand, with no hop,
/// and only waits (async_receive_some) when nothing is: under load a job
/// costs one post fewer.
template <class S>
concept TakesReady = requires(S& s, std::size_t n) {
  { s.try_receive_some(n) } -> std::same_as<std::vector<typename S::delivery_type>>;
};

/// A source that settles several deliveries in one call.
///
/// Required, for `S s`, `std::span<typename S::delivery_type> ds`:
///  - `s.ack(ds)`: acks each, as `s.ack(d)` would, in one go (a broker
///    source sends a run of them as one multiple ack).
/// The dispatcher acks the duplicate deliveries attached to a job with it;
/// a broker source also coalesces single acks that arrive together.
template <class S>
concept SettlesBatches = requires(S& s, std::span<typename S::delivery_type> ds) { s.ack(ds); };

/// A sink that publishes several statuses in one call.
///
/// Required, for `K k`, `std::span<const JobResult* const> rs`:
///  - `k.async_publish_some(rs, h)`: publishes each status as async_publish
///    would, in the order given, and completes `h(std::vector<std::error_code>)`
///    once every one is settled: one code per status, in the same order, each
///    meaning what async_publish's would. The span and the results stay
///    valid until `h` is invoked.
/// The dispatcher then sends the statuses that finished while earlier ones
/// were unconfirmed in one call, and settles their deliveries in one
/// completion (one hop through its strand) instead of one per job. Single
/// async_publish stays required: a sink without batches needs nothing new.
template <class K>
concept PublishesBatches = requires(K& k, std::span<const JobResult* const> rs) {
  k.async_publish_some(rs, detail::publish_some_handler_archetype{});
};

/// Declares what a JobSource promises beyond the concept, so that
/// JobSource<S> fails to compile if the member is missing or misspelt:
///  - prefetch_control: `S` models PrefetchControl (`static constexpr bool
///    prefetch_control = true;`);
///  - receives_batches: `S` models ReceivesBatches (`static constexpr bool
///    receives_batches = true;`);
///  - takes_ready: `S` models TakesReady (`static constexpr bool takes_ready
///    = true;`).
/// Specialize it for a type you cannot change.
template <class S>
struct job_source_traits {
  static constexpr bool prefetch_control = detail::declares_prefetch_control<S>::value;
  static constexpr bool receives_batches = detail::declares_receives_batches<S>::value;
  static constexpr bool takes_ready = detail::declares_takes_ready<S>::value;
};

/// Declares what a StatusSink promises beyond the concept, so that
/// StatusSink<K> fails to compile if the member is missing or misspelt:
///  - publishes_batches: `K` models PublishesBatches (`static constexpr bool
///    publishes_batches = true;`).
template <class K>
struct status_sink_traits {
  static constexpr bool publishes_batches = detail::declares_publishes_batches<K>::value;
};

/// What a WorkerTransport promises beyond the concept. A declaration, not
/// an expression (nothing to misspell): true when `T` has `static constexpr
/// bool reports_accepted = true;`, or specialize it for a type you cannot
/// change.
///  - reports_accepted: every async_run given a non-empty progress callback
///    calls it with a Phase::accepted event once the worker has taken the job
///    (before any other event of that run). The dispatcher then enforces
///    DispatcherOptions::accept_timeout itself, and knows which runs were
///    never accepted (so they can go elsewhere).
///  - monitors_runs: the transport watches each run itself (a heartbeat on
///    its stream) and completes a run whose worker went silent with
///    errc::worker_lost. A worker declared dead for missed pings then does
///    not fail the jobs it runs: their streams are alive or will be reported
///    lost by the transport. (A restart or a deregistration still does.)
template <class T>
struct worker_transport_traits {
  static constexpr bool reports_accepted = detail::declares_reports_accepted<T>::value;
  static constexpr bool monitors_runs = detail::declares_monitors_runs<T>::value;
};

// ---------------------------------------------------------------------------
// The concepts

/// A message taken from a JobSource, not yet settled.
///
/// Required, for `const D d`:
///  - `D` is movable;
///  - `d.job()` -> convertible to `const Job&`, valid as long as `d` lives;
///  - if `delivery_traits<D>::reports_invalid`: ReportsInvalid<D>.
/// Optional: ReportsInvalid<D> (the dispatcher uses it whenever present).
/// A delivery destroyed without being settled is handed back to the source
/// (the way a broker redelivers what a closed channel never acked).
template <class D>
concept Delivery = std::movable<D> && requires(const D& d) {
  { d.job() } -> std::convertible_to<const Job&>;
} && (!delivery_traits<D>::reports_invalid || ReportsInvalid<D>);

/// Where jobs come from (a queue).
///
/// Required, for `S s`, `typename S::delivery_type d`, `Disposition x`,
/// `std::string_view reason`:
///  - `typename S::delivery_type` models Delivery;
///  - `s.async_receive(h)`: completes `h(std::error_code, delivery_type)` with
///    the next delivery; errc::source_closed when no more will come.
///    Cancellation (terminal): the receive completes with
///    asio::error::operation_aborted and takes no message;
///  - `s.ack(d)`: the job is finished with; the source forgets it;
///  - `s.reject(d, x, reason)`: requeue it (it did not run) or dead-letter it;
///  - if `job_source_traits<S>::prefetch_control`: PrefetchControl<S>.
///  - if `job_source_traits<S>::receives_batches`: ReceivesBatches<S>.
///  - if `job_source_traits<S>::takes_ready`: TakesReady<S>.
/// Optional: PrefetchControl<S>, ReceivesBatches<S>, TakesReady<S> and
/// SettlesBatches<S> (the dispatcher uses each whenever present).
/// A source whose memory must not grow with its queue's depth should declare
/// `static constexpr bool prefetch_control = true;`: a misspelt `set_prefetch`
/// is then a compile error, not a source that silently takes everything.
template <class S>
concept JobSource =
    requires { typename S::delivery_type; } && Delivery<typename S::delivery_type> &&
    requires(S& s, typename S::delivery_type& d, Disposition x, std::string_view reason) {
      s.async_receive(detail::receive_handler_archetype<typename S::delivery_type>{});
      s.ack(d);
      s.reject(d, x, reason);
    } && (!job_source_traits<S>::prefetch_control || PrefetchControl<S>) &&
    (!job_source_traits<S>::receives_batches || ReceivesBatches<S>) &&
    (!job_source_traits<S>::takes_ready || TakesReady<S>);

/// The cancellation type of a run handed over rather than stopped (see
/// WorkerTransport): the dispatcher lets go of it at a stop deadline or when
/// destroyed, and the job's next delivery, in this process or another,
/// attaches to the run still going on its worker.
inline constexpr asio::cancellation_type run_hand_over = asio::cancellation_type::total;

/// How the dispatcher reaches workers.
///
/// Required, for `T t`, `const WorkerInfo w`, `const Job j`,
/// `ProgressCallback p`, `std::chrono::milliseconds deadline`:
///  - `t.async_run(w, j, p, h)`: runs `j` on worker `w`, calling `p` (when
///    non-empty, from any thread) for each progress event, and completes
///    `h(std::error_code, JobResult)`. No error: the worker's result, success
///    or failure. errc::worker_unreachable / errc::worker_refused: the worker
///    never accepted the job. errc::worker_lost (or any other error): it may
///    have started. On error, JobResult::error carries the detail. `j` stays
///    valid until `h` is invoked. Cancellation (terminal): the transport lets
///    go of the run (tells the worker to stop when it can) and completes with
///    asio::error::operation_aborted; the job may have partly run. Partial:
///    the worker is asked to stop the job, and the run completes with what it
///    then reports. `run_hand_over` (total, alone): the transport lets go of
///    the run and leaves the job running on its worker, so that a later
///    async_run of the same job id attaches to it; one that cannot treats it
///    as terminal.
///  - `t.async_ping(w, deadline, h)`: completes `h(std::error_code, PingReply)`
///    within `deadline`. Cancellation (terminal): completes at once with
///    asio::error::operation_aborted, without waiting for the deadline.
template <class T>
concept WorkerTransport = requires(T& t, const WorkerInfo& w, const Job& j, ProgressCallback p,
                                   std::chrono::milliseconds deadline) {
  t.async_run(w, j, p, detail::run_handler_archetype{});
  t.async_ping(w, deadline, detail::ping_handler_archetype{});
};

/// Where final statuses go.
///
/// Required, for `K k`, `const JobResult r`:
///  - `k.async_publish(r, h)`: completes `h(std::error_code)`; no error means
///    the status is durable (a broker confirmed it). `r` stays valid until `h`
///    is invoked. Cancellation (terminal): completes at once with
///    asio::error::operation_aborted; the status may or may not become
///    durable (what a broker already took cannot be recalled), so the caller
///    treats it as not confirmed.
/// Optional: PublishesBatches<K> (the dispatcher uses it whenever present;
/// declare `static constexpr bool publishes_batches = true;` to have a
/// misspelt async_publish_some refused at compile time).
template <class K>
concept StatusSink = requires(K& k, const JobResult& r) {
  k.async_publish(r, detail::publish_handler_archetype{});
} && (!status_sink_traits<K>::publishes_batches || PublishesBatches<K>);

/// The worker pool a Dispatcher leases slots from (WorkerPool, WorkerPoolSt).
///
/// Required, for `P p`, `typename P::Lease l`, `const typename P::Lease cl`,
/// `typename P::Subscription s`, `Labels labels`, `std::string_view id`,
/// `std::string reason`, and `f` callable as `f(const WorkerEvent&)`:
///  - `typename P::Lease`: default-constructible and movable, one leased slot;
///    `l.release()` returns it (once; later calls do nothing);
///    `cl.current()` -> convertible to `bool`: the worker is still the live
///    incarnation the slot was taken from;
///    `cl.worker_info()` -> convertible to `std::shared_ptr<const WorkerInfo>`;
///    `cl.generation()` -> convertible to `std::uint64_t`, as in
///    WorkerEvent::lost_generation;
///  - `typename P::Subscription`: default-constructible and movable;
///    `s.reset()` unsubscribes;
///  - `p.async_acquire(labels, h)`: completes `h(std::error_code, Lease)` with a
///    slot of a live worker offering `labels`; cancellation (terminal)
///    completes it with asio::error::operation_aborted;
///  - `p.subscribe(f)` -> `Subscription`: `f` sees every WorkerEvent;
///  - `p.alive_capacity()` -> convertible to `std::size_t`, callable from any
///    thread: the slots of live workers that take jobs;
///  - `p.mark_dead(id, reason)`: the worker stopped answering; its leases are void.
/// Optional, used by the Dispatcher when present:
///  - `p.try_acquire(labels)` -> `Lease`, empty when no slot is free now:
///    without it every job waiting for a slot counts against the dispatcher's
///    window, so a backlog for one label can stall the others;
///  - `p.snapshot()` -> a range of WorkerSnapshot: tells a job whose labels
///    no live worker offers (failed at the placement timeout) from one whose
///    workers are only busy (it keeps waiting); without it both fail then.
template <class P>
concept LeasePool =
    requires { typename P::Lease; typename P::Subscription; } && std::default_initializable<typename P::Lease> &&
    std::movable<typename P::Lease> && std::default_initializable<typename P::Subscription> &&
    std::movable<typename P::Subscription> &&
    requires(P& p, typename P::Lease& l, const typename P::Lease& cl, typename P::Subscription& s, Labels labels,
             std::string_view id, std::string reason) {
      l.release();
      { cl.current() } -> std::convertible_to<bool>;
      { cl.worker_info() } -> std::convertible_to<std::shared_ptr<const WorkerInfo>>;
      { cl.generation() } -> std::convertible_to<std::uint64_t>;
      s.reset();
      p.async_acquire(labels, detail::acquire_handler_archetype<typename P::Lease>{});
      { p.subscribe(detail::listener_archetype{}) } -> std::same_as<typename P::Subscription>;
      { p.alive_capacity() } -> std::convertible_to<std::size_t>;
      p.mark_dead(id, reason);
    };

/// The hooks a Dispatcher reports to (see DispatcherObserver, whose hooks do
/// nothing: derive from it and hide the ones you want).
///
/// Required, for `O o`, `const Job j`, `const WorkerInfo w`, `const JobResult r`,
/// `const ProgressEvent e`, `std::error_code ec`, `std::string_view text`:
///  - `O` is move-constructible (the dispatcher keeps its own);
///  - `O::wants_progress`: a constant expression convertible to `bool`; when
///    false, transports get no progress callback and on_progress is never called;
///  - `o.on_received(j)`, `o.on_assigned(j, w)`, `o.on_not_accepted(j, w, ec, text)`,
///    `o.on_progress(e)`, `o.on_finished(j, r)`, `o.on_dead_lettered(j, text)`,
///    `o.on_handed_back(j)`, `o.on_publish_failed(j, ec)`.
template <class O>
concept ObservesDispatcher =
    std::move_constructible<O> && requires { typename std::bool_constant<static_cast<bool>(O::wants_progress)>; } &&
    requires(O& o, const Job& j, const WorkerInfo& w, const JobResult& r, const ProgressEvent& e, std::error_code ec,
             std::string_view text) {
      o.on_received(j);
      o.on_assigned(j, w);
      o.on_not_accepted(j, w, ec, text);
      o.on_progress(e);
      o.on_finished(j, r);
      o.on_settled(j);
      o.on_dead_lettered(j, text);
      o.on_handed_back(j);
      o.on_publish_failed(j, ec);
    };

}  // namespace blacktree::core
