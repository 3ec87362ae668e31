// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// WorkerService: the worker side of blacktree.v1.Worker. Runs up to
// `capacity` jobs at once through a worker::JobRunner, on `capacity` threads
// started with the first job (no thread is created per job; none at all for
// a runner that returns at once, JobRunner::immediate()), and streams their
// progress back to the caller.
//
//  - A job is refused, never queued, when the worker is full
//    (RESOURCE_EXHAUSTED) or draining (FAILED_PRECONDITION), with a message
//    that says so; the orchestrator then offers it to another worker.
//  - A job id it already runs, or finished and keeps the result of, is
//    attached to, not started again: the new caller gets the rest of the
//    run's events and its one result.
//  - Builds outlive their orchestrator: a job whose last caller goes away
//    (orchestrator restart, failover, network loss) runs on for
//    `orphan_grace`, and its result is kept as long for the next caller
//    (carried_jobs() is what the registrar reports when it registers);
//    a job nobody comes back for within the grace is stopped, and a result
//    nobody collects is dropped, each with a log line. Only Cancel (and
//    shutdown) stops a job on purpose.
//  - Every running job's stream carries a heartbeat when idle for
//    `heartbeat_interval`, so the caller can tell it from a stuck one.
//  - A job's output is bytes: text that is not UTF-8 is repaired (U+FFFD)
//    before it goes into a message, so it can never break the stream.
//  - Log lines are buffered per job up to a bound; when a slow caller lets the
//    buffer fill, further lines are dropped and counted (phase changes and the
//    result are never dropped).
//  - A runner that throws fails its job (the error names the exception's
//    message); the worker goes on: no exception leaves a job's thread.
//  - shutdown() is the whole of a graceful stop: drain, wait, cancel, deregister.

#include <blacktree/core/job.hpp>
#include <blacktree/core/result.hpp>
#include <blacktree/grpc/credentials.hpp>
#include <blacktree/grpc/error.hpp>
#include <blacktree/grpc/registrar.hpp>
#include <blacktree/worker/job_runner.hpp>

#include <blacktree/v1/blacktree.grpc.pb.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace blacktree::grpc {

/// What WorkerServiceOptions::log is told.
enum class WorkerServiceEvent : std::uint8_t {
  job_orphaned,     ///< its last caller went away: it runs on for the orphan grace
  job_attached,     ///< a caller came for an orphaned job, or for a kept result
  orphan_stopped,   ///< nobody came for it within the grace: stopped
  result_dropped,   ///< a result nobody collected, dropped (grace passed, or too many kept)
};

/// A short stable dotted name, for logs: "job.orphaned", ...
std::string_view to_string(WorkerServiceEvent event) noexcept;

struct WorkerServiceOptions {
  std::string worker_id;
  std::string incarnation;  ///< new for every process start
  std::uint32_t capacity = 1;
  std::size_t max_buffered_lines = 4096;  ///< per job, waiting to be sent
  /// How often every running job's stream carries a heartbeat (0: never), so
  /// the orchestrator can tell a live stream from a stuck one.
  std::chrono::milliseconds heartbeat_interval{5000};
  /// How long a job whose caller went away runs on, and how long a result
  /// is kept for a caller to collect it (see above). 0: a job stops when its
  /// last caller goes away, and no result is kept.
  std::chrono::milliseconds orphan_grace{600'000};
  /// Results kept at most (the oldest go first, logged when uncollected).
  std::size_t max_kept_results = 1024;
  /// Told what happens to jobs without a caller (one line each, in words).
  std::function<void(WorkerServiceEvent, std::string_view job_id, std::string_view line)> log{};
};

struct ShutdownOptions {
  /// How long running jobs may take to finish by themselves.
  std::chrono::milliseconds drain_timeout{60'000};
  /// How long jobs cancelled at the drain deadline may take to report.
  std::chrono::milliseconds cancel_grace{30'000};
  /// Sent to the orchestrator with the deregistration.
  std::string reason = "the worker is shutting down";
};

class WorkerService final : public ::blacktree::v1::Worker::CallbackService {
 public:
  /// Called for every ping with the pinging orchestrator's id.
  using PingListener = std::function<void(std::string_view orchestrator_id)>;

  WorkerService(worker::JobRunner& runner, WorkerServiceOptions options);
  /// Cancels every running job and joins its thread.
  ~WorkerService() override;

  /// Takes no new jobs from now on (pings report draining).
  void drain();
  /// Waits until no job runs and every result has been sent (or its caller
  /// went away); false if `timeout` passed first.
  bool wait_idle(std::chrono::milliseconds timeout);
  /// Stops every running job (their results say why).
  void cancel_all(std::string_view reason);

  /// A graceful stop: takes no new jobs (pings report draining, so the
  /// orchestrator offers nothing more), lets running jobs finish until
  /// `drain_timeout`, cancels what still runs and waits up to `cancel_grace`
  /// for it to report; waits (within `drain_timeout`) for an orchestrator to
  /// collect the results of jobs whose caller went away; then deregisters
  /// through `registrar` (when given).
  /// Blocks. An error says what could not end by itself:
  /// errc::drain_deadline_exceeded (jobs were cancelled) or
  /// errc::jobs_still_running (cancelled jobs had not ended either); the
  /// deregistration's own outcome goes to the registrar's log.
  core::Result<void> shutdown(Registrar* registrar, const ShutdownOptions& options = {});

  std::size_t running() const;
  std::vector<std::string> running_jobs() const;
  /// The jobs a registration reports (RegistrarOptions::carried_jobs): those
  /// running (but not being dropped) and those whose result is kept.
  CarriedJobs carried_jobs() const;
  /// Streams waiting for the result of running job `job_id` (0: not running).
  std::size_t callers(std::string_view job_id) const;

  /// The orchestrator this worker is registered with; pings from any other
  /// answer registered=false.
  void set_orchestrator_id(std::string id);
  void set_ping_listener(PingListener listener);

  /// Whom RunJob, Ping and Cancel obey (see CallerPolicy and
  /// authorize_orchestrator); a refused call never reaches the runner or the
  /// ping listener. The default obeys every caller.
  void set_caller_policy(CallerPolicy policy);
  /// The secret of the current registration (Registrar::worker_secret()).
  void set_orchestrator_secret(std::string secret);

  ::grpc::ServerWriteReactor<v1::RunJobReply>* RunJob(::grpc::CallbackServerContext* context,
                                                      const v1::RunJobRequest* request) override;
  ::grpc::ServerUnaryReactor* Ping(::grpc::CallbackServerContext* context, const v1::PingRequest* request,
                                   v1::PingReply* reply) override;
  ::grpc::ServerUnaryReactor* Cancel(::grpc::CallbackServerContext* context, const v1::CancelRequest* request,
                                     v1::CancelReply* reply) override;

  struct State;  // shared with job threads and streams
  class JobThreads;

 private:
  static void expire(State& state, std::chrono::steady_clock::time_point now);
  JobThreads& job_threads();

  std::shared_ptr<State> state_;
  // The jobs of a runner that is not immediate run here: started with the
  // first such job (a worker whose runner returns at once has none), joined
  // in the destructor.
  std::once_flag threads_started_;
  std::unique_ptr<JobThreads> threads_;
  std::jthread housekeeping_;  // heartbeats and the orphan grace; stopped and joined before state_ is let go
};

}  // namespace blacktree::grpc
