// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The three things the core is parameterised on. Each concept lists the exact
// expressions it requires; the in-memory models in in_memory.hpp satisfy all
// three (checked there with static_assert), and tests/unit/test_concepts.cpp
// checks that a type missing any one expression is rejected.
//
// Common rules for every asynchronous operation below (asio's rules):
//  - the completion handler is never invoked from inside the initiating call;
//    it is invoked as if posted to its associated executor;
//  - if the handler has an associated cancellation slot, the operation should
//    support terminal cancellation through it and then complete with
//    asio::error::operation_aborted. The slot's handler may be invoked from
//    another thread than the one completing the operation, so it must be
//    thread-safe with respect to the operation's own completion.

#include <blacktree/core/error.hpp>
#include <blacktree/core/job.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <string_view>
#include <system_error>

namespace blacktree::core {
namespace detail {

// Minimal handlers ("archetypes") used to state the required expressions.
template <class Delivery>
struct receive_handler_archetype {
  void operator()(std::error_code, Delivery) {}
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

}  // namespace detail

/// A message taken from a JobSource, not yet settled.
///
/// Required, for `const D d`:
///  - `D` is movable;
///  - `d.job()` -> convertible to `const Job&`, valid as long as `d` lives.
/// Optional:
///  - `d.invalid_reason()` -> convertible to `std::string_view`: non-empty when
///    the message could not be turned into a valid job (bad JSON, a missing
///    field). The dispatcher then dead-letters it with that reason, after
///    publishing a failure status if `d.job().id` is known.
/// A delivery destroyed without being settled is handed back to the source
/// (the way a broker redelivers what a closed channel never acked).
template <class D>
concept Delivery = std::movable<D> && requires(const D& d) {
  { d.job() } -> std::convertible_to<const Job&>;
};

/// Where jobs come from (a queue).
///
/// Required, for `S s`, `typename S::delivery_type d`, `Disposition x`,
/// `std::string_view reason`:
///  - `typename S::delivery_type` models Delivery;
///  - `s.async_receive(h)`: completes `h(std::error_code, delivery_type)` with
///    the next delivery; errc::source_closed when no more will come;
///  - `s.ack(d)`: the job is finished with; the source forgets it;
///  - `s.reject(d, x, reason)`: requeue it (it did not run) or dead-letter it.
/// Optional:
///  - `s.set_prefetch(std::size_t n)`: the dispatcher's promise to hold at
///    most `n` unsettled deliveries; a broker-backed source sets its QoS from
///    it so the broker holds the rest.
template <class S>
concept JobSource =
    requires { typename S::delivery_type; } && Delivery<typename S::delivery_type> &&
    requires(S& s, typename S::delivery_type& d, Disposition x, std::string_view reason) {
      s.async_receive(detail::receive_handler_archetype<typename S::delivery_type>{});
      s.ack(d);
      s.reject(d, x, reason);
    };

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
///    valid until `h` is invoked.
///  - `t.async_ping(w, deadline, h)`: completes `h(std::error_code, PingReply)`
///    within `deadline`.
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
///    is invoked.
template <class K>
concept StatusSink = requires(K& k, const JobResult& r) {
  k.async_publish(r, detail::publish_handler_archetype{});
};

}  // namespace blacktree::core
