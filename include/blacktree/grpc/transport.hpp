// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// GrpcTransport: the core's WorkerTransport over gRPC (blacktree.v1.Worker).
//
// One long-lived channel per worker, created on first use and kept until the
// worker is forgotten; every call has a deadline; calls run on gRPC's
// callback API (no thread per call) and complete on the handler's associated
// executor, so the dispatcher's strand never blocks.
//
// Error mapping (the distinction the dispatcher needs):
//  - the RunJob stream ended before the worker sent `accepted`:
//      RESOURCE_EXHAUSTED / FAILED_PRECONDITION, or no `accepted` within
//      accept_timeout (a slow worker is not a dead one) -> errc::worker_refused
//      anything else (connection refused, UNAVAILABLE) -> errc::worker_unreachable
//    either way the worker never ran the job, so it may go to another one;
//  - ALREADY_EXISTS (a worker that runs the job already and cannot attach)
//    -> errc::worker_lost: running it elsewhere would run it twice at once;
//  - `accepted` with attached=true is an accepted run like any other: the
//    stream carries the running job's remaining events and its one result;
//  - the stream broke after `accepted` and before the result, or carried
//    nothing for heartbeat_timeout (then the worker is told to Cancel the
//    job) -> errc::worker_lost.

#include <blacktree/core/completion_handler.hpp>
#include <blacktree/core/concepts.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/worker_pool.hpp>
#include <blacktree/grpc/credentials.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/associated_cancellation_slot.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace grpc {
class ChannelCredentials;
}

namespace blacktree::grpc {

struct TransportOptions {
  /// Sent with every ping; a worker registered with another orchestrator
  /// (this one restarted) answers registered=false and registers again.
  /// Also the first part of every offer id ("<orchestrator_id>-<n>"). It must
  /// be new for every process (the orchestrator service draws a random one):
  /// a worker that sees a later offer of the same id attached to a run keeps
  /// that run when an earlier offer is taken back. Empty: the worker never
  /// does, and a take-back always stops the run.
  std::string orchestrator_id;
  /// A RunJob that is not accepted within this is abandoned as unreachable.
  /// This and heartbeat_timeout are checked by one timer per transport, every
  /// quarter of the shorter of the two (10 ms to 1 s), so either is acted on
  /// up to that much late. 0: not watched.
  std::chrono::milliseconds accept_timeout{10'000};
  /// The run deadline when a job sets no timeout of its own.
  std::chrono::milliseconds default_run_deadline{std::chrono::hours(2)};
  /// Added to a job's own timeout: the worker enforces the timeout and still
  /// has to report it.
  std::chrono::milliseconds run_deadline_margin{60'000};
  /// Channel credentials; insecure when null. See channel_credentials().
  std::shared_ptr<::grpc::ChannelCredentials> credentials;
  /// When set, every call to a worker carries the secret its registration
  /// was issued (see WorkerSecrets), without which the worker obeys nothing.
  std::shared_ptr<WorkerSecrets> worker_secrets{};
  /// An accepted stream of a worker that announced heartbeats, silent this
  /// long (at least three of its heartbeat intervals), is reported lost and
  /// the job cancelled on the worker. 0: never.
  std::chrono::milliseconds heartbeat_timeout{30'000};
};

class GrpcTransport {
 public:
  /// A run's progress callback hears Phase::accepted once the worker took the
  /// job, before any other event of that run.
  static constexpr bool reports_accepted = true;
  /// Each accepted run is watched (heartbeats, keepalive): a silent worker's
  /// run completes with errc::worker_lost without the health monitor.
  static constexpr bool monitors_runs = true;

  GrpcTransport(asio::any_io_executor executor, TransportOptions options);
  GrpcTransport(const GrpcTransport&) = delete;
  GrpcTransport& operator=(const GrpcTransport&) = delete;
  /// Cancels every call in flight and waits for gRPC to let go of them; their
  /// handlers complete with operation_aborted (posted, as always).
  ~GrpcTransport();

  template <class Token>
  auto async_run(const core::WorkerInfo& worker, const core::Job& job, core::ProgressCallback progress,
                 Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, core::JobResult)>(
        [this, &worker, &job](auto handler, core::ProgressCallback on_progress) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto cancel = start_run(worker, job, std::move(on_progress), RunHandler(std::move(handler), executor_));
          if (slot.is_connected()) slot.template emplace<CancelFn>(std::move(cancel));
        },
        token, std::move(progress));
  }

  template <class Token>
  auto async_ping(const core::WorkerInfo& worker, std::chrono::milliseconds deadline, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, core::PingReply)>(
        [this, &worker, deadline](auto handler) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto cancel = start_ping(worker, deadline, PingHandler(std::move(handler), executor_));
          if (slot.is_connected()) slot.template emplace<CancelFn>(std::move(cancel));
        },
        token);
  }

  /// Calls `then` once no RunJob stream to worker `worker_id` is in flight
  /// (each one's handler has been given its outcome), or after `timeout`,
  /// whichever comes first; at once when there is none. From any thread.
  /// For a deregistration: the results a leaving worker sent last are taken
  /// before its leases are voided (OrchestratorService::settle_runs_before_deregister).
  void when_runs_ended(std::string_view worker_id, std::chrono::milliseconds timeout, std::function<void()> then);

  /// Drops the channel of a worker that left. Calls in flight keep theirs.
  void forget(std::string_view worker_id);

  /// Keeps the channels in step with `pool`: every worker the pool removes
  /// (deregistered, or forgotten by the health monitor after
  /// HealthOptions::forget_dead_after) loses its channel, so channels do not
  /// pile up with crashed workers. Lasts as long as the returned subscription,
  /// which must not outlive this transport.
  template <class Pool>
  [[nodiscard]] typename Pool::Subscription forget_removed_workers(Pool& pool) {
    return pool.subscribe([this](const core::WorkerEvent& event) {
      if (event.removed && event.info) forget(event.info->id);
    });
  }

  /// Calls started and not yet finished (for tests and metrics).
  std::size_t calls_in_flight() const;

  struct Impl;  // internal, shared with the calls in flight

 private:
  using RunHandler = core::CompletionHandler<void(std::error_code, core::JobResult)>;
  using PingHandler = core::CompletionHandler<void(std::error_code, core::PingReply)>;

  // Cancellation-slot handler (thread-safe): terminal lets go of the RunJob
  // call at once; partial asks the worker to stop an accepted job (Cancel)
  // and waits for the result it then sends. For a Ping, terminal ends the
  // call at once (operation_aborted).
  struct CancelFn {
    std::shared_ptr<void> call;
    void (*cancel)(const std::shared_ptr<void>&, asio::cancellation_type) = nullptr;
    void operator()(asio::cancellation_type type) const {
      if (cancel) cancel(call, type);
    }
  };

  CancelFn start_run(const core::WorkerInfo& worker, const core::Job& job, core::ProgressCallback progress,
                     RunHandler handler);
  CancelFn start_ping(const core::WorkerInfo& worker, std::chrono::milliseconds deadline, PingHandler handler);

  asio::any_io_executor executor_;
  std::shared_ptr<Impl> impl_;
};

static_assert(core::WorkerTransport<GrpcTransport>);

}  // namespace blacktree::grpc
