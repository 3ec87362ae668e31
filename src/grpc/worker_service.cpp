// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/grpc/worker_service.hpp>

#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>

#include <condition_variable>
#include <exception>
#include <deque>
#include <map>
#include <mutex>
#include <stop_token>
#include <thread>

namespace blacktree::grpc {
namespace {

namespace v1 = ::blacktree::v1;

// A RunJob the worker will not take: finished at once with the reason.
class Refusal final : public ::grpc::ServerWriteReactor<v1::RunJobReply> {
 public:
  explicit Refusal(const ::grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// The outbox of one accepted RunJob. gRPC holds it until OnDone; the job's
// thread holds it until the job ends, and pushes to it from there.
//
// StartWrite and Finish are never called with mutex_ held: gRPC may run the
// resulting OnWriteDone inline on the calling thread.
class RunStream final : public ::grpc::ServerWriteReactor<v1::RunJobReply> {
 public:
  RunStream(std::size_t max_lines, std::function<void()> on_cancel, std::function<void()> on_done)
      : max_lines_(max_lines), on_cancel_(std::move(on_cancel)), on_done_(std::move(on_done)) {}

  void hold(std::shared_ptr<RunStream> self) { self_ = std::move(self); }

  void push_accepted(const std::string& worker_id) {
    v1::RunJobReply reply;
    reply.mutable_accepted()->set_worker_id(worker_id);
    push(std::move(reply), false, false);
  }

  void push_event(const core::ProgressEvent& event) {
    v1::RunJobReply reply;
    *reply.mutable_event() = wire::to_proto(event);
    push(std::move(reply), !event.line.empty(), false);
  }

  void push_result(const core::JobResult& result) {
    v1::RunJobReply reply;
    *reply.mutable_result() = wire::to_proto(result);
    push(std::move(reply), false, true);
  }

  std::size_t dropped_lines() const {
    std::lock_guard lock(mutex_);
    return dropped_;
  }

  void OnWriteDone(bool ok) override {
    Action action;
    {
      std::lock_guard lock(mutex_);
      writing_ = false;
      if (!ok) broken_ = true;  // the caller is gone; OnCancel stops the job
      action = next_locked();
    }
    perform(action);
  }

  void OnCancel() override {
    if (on_cancel_) on_cancel_();
    Action action;
    {
      std::lock_guard lock(mutex_);
      broken_ = true;
      action = next_locked();
    }
    perform(action);
  }

  void OnDone() override {
    std::shared_ptr<RunStream> self;
    {
      std::lock_guard lock(mutex_);
      done_ = true;
      self = std::move(self_);
    }
    if (on_done_) on_done_();
    // `self` may be the last reference: *this ends with this scope.
  }

 private:
  enum class Action { none, write, finish_ok, finish_cancelled };

  void push(v1::RunJobReply reply, bool is_line, bool last) {
    Action action;
    {
      std::lock_guard lock(mutex_);
      if (done_ || broken_) return;
      if (is_line) {
        if (buffered_lines_ >= max_lines_) {
          ++dropped_;
          return;
        }
        ++buffered_lines_;
      }
      outbox_.emplace_back(std::move(reply), is_line);
      if (last) result_queued_ = true;
      action = next_locked();
    }
    perform(action);
  }

  // Decides what to start next; the caller performs it after unlocking.
  Action next_locked() {
    if (writing_ || finish_called_) return Action::none;
    if (broken_) {
      finish_called_ = true;
      return Action::finish_cancelled;
    }
    if (outbox_.empty()) {
      if (!result_queued_) return Action::none;
      finish_called_ = true;
      return Action::finish_ok;
    }
    auto [reply, is_line] = std::move(outbox_.front());
    outbox_.pop_front();
    if (is_line) --buffered_lines_;
    current_ = std::move(reply);
    writing_ = true;
    return Action::write;
  }

  void perform(Action action) {
    switch (action) {
      case Action::none: break;
      case Action::write: StartWrite(&current_); break;
      case Action::finish_ok: Finish(::grpc::Status::OK); break;
      case Action::finish_cancelled:
        Finish(::grpc::Status(::grpc::StatusCode::CANCELLED, "the caller went away"));
        break;
    }
  }

  const std::size_t max_lines_;
  std::function<void()> on_cancel_;
  std::function<void()> on_done_;

  mutable std::mutex mutex_;
  std::deque<std::pair<v1::RunJobReply, bool>> outbox_;
  v1::RunJobReply current_;  // the write in progress; touched only by whoever set writing_
  std::size_t buffered_lines_ = 0;
  std::size_t dropped_ = 0;
  bool writing_ = false;
  bool result_queued_ = false;
  bool finish_called_ = false;
  bool broken_ = false;
  bool done_ = false;
  std::shared_ptr<RunStream> self_;
};

// The runner's result; a runner that throws (against its contract) fails its
// job instead of ending the process: an exception must not leave this thread.
core::JobResult run_guarded(worker::JobRunner& runner, const core::Job& job, const worker::EmitFn& emit,
                            std::stop_token stop) {
  core::JobResult failed;
  failed.success = false;
  try {
    return runner.run(job, emit, std::move(stop));
  } catch (const std::exception& e) {
    failed.error = fmt::format("the job runner failed: {}", e.what());
  } catch (...) {
    failed.error = "the job runner failed with an exception that is not a std::exception";
  }
  return failed;
}

struct RunningJob {
  std::string id;
  std::stop_source stop;
  std::thread thread;
};

}  // namespace

struct WorkerService::State {
  State(worker::JobRunner& r, WorkerServiceOptions o) : runner(r), options(std::move(o)) {}

  worker::JobRunner& runner;
  WorkerServiceOptions options;

  mutable std::mutex mutex;
  std::condition_variable idle;
  bool draining = false;
  std::map<std::string, std::shared_ptr<RunningJob>, std::less<>> jobs;
  // Accepted RunJob streams gRPC has not finished with: a job's slot is freed
  // before its result is sent, and a drain must not end (and deregister,
  // which makes the orchestrator call the job lost) before the result is out.
  std::size_t open_streams = 0;
  std::vector<std::thread> finished;  // threads whose job ended, to join
  std::string orchestrator_id;
  PingListener ping_listener;
  CallerPolicy caller;
  std::string orchestrator_secret;

  ::grpc::Status authorize(const ::grpc::ServerContextBase& context) const {
    CallerPolicy policy;
    std::string secret;
    {
      std::lock_guard lock(mutex);
      policy = caller;
      secret = orchestrator_secret;
    }
    return authorize_orchestrator(policy, secret, context);
  }

  // Joins the threads of jobs that ended. Never called with `mutex` held.
  void reap() {
    std::vector<std::thread> done;
    {
      std::lock_guard lock(mutex);
      done.swap(finished);
    }
    for (auto& t : done) t.join();
  }
};

WorkerService::WorkerService(worker::JobRunner& runner, WorkerServiceOptions options)
    : state_(std::make_shared<State>(runner, std::move(options))) {
  if (state_->options.capacity == 0) state_->options.capacity = 1;
}

WorkerService::~WorkerService() {
  drain();
  cancel_all("the worker is shutting down");
  {
    std::unique_lock lock(state_->mutex);
    state_->idle.wait(lock, [&] { return state_->jobs.empty(); });
  }
  state_->reap();
}

void WorkerService::drain() {
  std::lock_guard lock(state_->mutex);
  state_->draining = true;
}

bool WorkerService::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mutex);
  return state_->idle.wait_for(lock, timeout, [&] { return state_->jobs.empty() && state_->open_streams == 0; });
}

void WorkerService::cancel_all(std::string_view /*reason*/) {
  std::lock_guard lock(state_->mutex);
  for (auto& [id, job] : state_->jobs) job->stop.request_stop();
}

core::Result<void> WorkerService::shutdown(Registrar* registrar, const ShutdownOptions& options) {
  drain();
  core::Result<void> outcome;
  if (!wait_idle(options.drain_timeout)) {
    const auto cancelled = running();
    cancel_all(options.reason);
    if (wait_idle(options.cancel_grace)) {
      outcome = core::Error{errc::drain_deadline_exceeded,
                            fmt::format("drain deadline ({} ms) passed: cancelled {} job(s)",
                                        options.drain_timeout.count(), cancelled)};
    } else {
      outcome = core::Error{errc::jobs_still_running,
                            fmt::format("drain deadline ({} ms) passed: cancelled {} job(s), and {} still ran {} ms "
                                        "later (a runner that ignores its stop token?)",
                                        options.drain_timeout.count(), cancelled, running(),
                                        options.cancel_grace.count())};
    }
  }
  // Deregistering only now: until the jobs end, their results still go out
  // through streams the orchestrator holds, and pings tell it we drain.
  if (registrar) (void)registrar->stop_and_deregister(options.reason);
  return outcome;
}

std::size_t WorkerService::running() const {
  std::lock_guard lock(state_->mutex);
  return state_->jobs.size();
}

std::vector<std::string> WorkerService::running_jobs() const {
  std::lock_guard lock(state_->mutex);
  std::vector<std::string> ids;
  for (const auto& [id, job] : state_->jobs) ids.push_back(id);
  return ids;
}

void WorkerService::set_orchestrator_id(std::string id) {
  std::lock_guard lock(state_->mutex);
  state_->orchestrator_id = std::move(id);
}

void WorkerService::set_ping_listener(PingListener listener) {
  std::lock_guard lock(state_->mutex);
  state_->ping_listener = std::move(listener);
}

void WorkerService::set_caller_policy(CallerPolicy policy) {
  std::lock_guard lock(state_->mutex);
  state_->caller = std::move(policy);
}

void WorkerService::set_orchestrator_secret(std::string secret) {
  std::lock_guard lock(state_->mutex);
  state_->orchestrator_secret = std::move(secret);
}

::grpc::ServerWriteReactor<v1::RunJobReply>* WorkerService::RunJob(::grpc::CallbackServerContext* context,
                                                                   const v1::RunJobRequest* request) {
  if (auto status = state_->authorize(*context); !status.ok()) return new Refusal(status);
  state_->reap();
  core::Job job = wire::from_proto(request->job());
  const auto& options = state_->options;

  std::unique_lock lock(state_->mutex);
  if (state_->draining) {
    return new Refusal(::grpc::Status(::grpc::StatusCode::FAILED_PRECONDITION,
                                      fmt::format("worker {} is draining and takes no new jobs", options.worker_id)));
  }
  if (state_->jobs.size() >= options.capacity) {
    return new Refusal(::grpc::Status(
        ::grpc::StatusCode::RESOURCE_EXHAUSTED,
        fmt::format("worker {} is full: {} of {} slots busy", options.worker_id, state_->jobs.size(), options.capacity)));
  }
  if (job.id.empty()) {
    return new Refusal(::grpc::Status(::grpc::StatusCode::INVALID_ARGUMENT, "the job has no jobId"));
  }
  if (state_->jobs.count(job.id)) {
    return new Refusal(::grpc::Status(::grpc::StatusCode::ALREADY_EXISTS,
                                      fmt::format("worker {} is already running job {}", options.worker_id, job.id)));
  }

  auto running = std::make_shared<RunningJob>();
  running->id = job.id;
  auto stream = std::make_shared<RunStream>(
      options.max_buffered_lines,
      [weak = std::weak_ptr<RunningJob>(running)] {
        if (auto r = weak.lock()) r->stop.request_stop();
      },
      [state = state_] {
        std::lock_guard done_lock(state->mutex);
        --state->open_streams;
        state->idle.notify_all();
      });
  ++state_->open_streams;
  stream->hold(stream);
  stream->push_accepted(options.worker_id);
  state_->jobs.emplace(job.id, running);

  // The thread takes the state lock first, so `running->thread` is assigned
  // before the thread can move itself to the finished list.
  running->thread = std::thread([state = state_, running, stream, job = std::move(job)]() mutable {
    { std::lock_guard sync(state->mutex); }
    const auto& worker_id = state->options.worker_id;
    const auto started = std::chrono::system_clock::now();
    worker::EmitFn emit = [&](std::string_view stage, std::string_view line) {
      stream->push_event(
          core::ProgressEvent{job.id, worker_id, core::Phase::running, std::string(stage), std::string(line)});
    };
    core::JobResult result = run_guarded(state->runner, job, emit, running->stop.get_token());
    result.job_id = job.id;
    result.worker_id = worker_id;
    if (result.started_at == std::chrono::system_clock::time_point{}) result.started_at = started;
    result.finished_at = std::chrono::system_clock::now();
    if (const auto dropped = stream->dropped_lines()) {
      result.logs += fmt::format("\n[blacktree: {} output lines were not streamed: the caller read too slowly]",
                                 dropped);
    }
    // Free the slot before the result goes out: the orchestrator reuses it
    // as soon as it reads the result, and must not find this worker "full".
    {
      std::lock_guard done_lock(state->mutex);
      state->jobs.erase(running->id);
      state->finished.push_back(std::move(running->thread));  // joined by a later reap()
      state->idle.notify_all();
    }
    stream->push_event(core::ProgressEvent{job.id, worker_id, core::Phase::finished, {}});
    stream->push_result(result);
  });
  return stream.get();
}

::grpc::ServerUnaryReactor* WorkerService::Ping(::grpc::CallbackServerContext* context, const v1::PingRequest* request,
                                                v1::PingReply* reply) {
  if (auto status = state_->authorize(*context); !status.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }
  PingListener listener;
  {
    std::lock_guard lock(state_->mutex);
    const auto& options = state_->options;
    reply->set_worker_id(options.worker_id);
    reply->set_incarnation(options.incarnation);
    reply->set_capacity(options.capacity);
    reply->set_state(state_->draining                            ? v1::WORKER_STATE_DRAINING
                     : state_->jobs.size() >= options.capacity ? v1::WORKER_STATE_BUSY
                                                                : v1::WORKER_STATE_FREE);
    for (const auto& [id, job] : state_->jobs) reply->add_running_jobs(id);
    reply->set_registered(!request->orchestrator_id().empty() &&
                          request->orchestrator_id() == state_->orchestrator_id);
    listener = state_->ping_listener;
  }
  if (listener) listener(request->orchestrator_id());
  auto* reactor = context->DefaultReactor();
  reactor->Finish(::grpc::Status::OK);
  return reactor;
}

::grpc::ServerUnaryReactor* WorkerService::Cancel(::grpc::CallbackServerContext* context,
                                                  const v1::CancelRequest* request, v1::CancelReply* reply) {
  if (auto status = state_->authorize(*context); !status.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->jobs.find(request->job_id());
    reply->set_found(it != state_->jobs.end());
    if (it != state_->jobs.end()) it->second->stop.request_stop();
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(::grpc::Status::OK);
  return reactor;
}

}  // namespace blacktree::grpc
