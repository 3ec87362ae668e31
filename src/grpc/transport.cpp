// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/grpc/transport.hpp>

#include "run_end.hpp"

#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>

#include <blacktree/v1/blacktree.grpc.pb.h>

#include <asio/steady_timer.hpp>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace blacktree::grpc {
namespace {

namespace v1 = ::blacktree::v1;

std::string describe(const ::grpc::Status& status) {
  return fmt::format("{} ({})", status.error_message().empty() ? "no detail" : status.error_message(),
                     static_cast<int>(status.error_code()));
}

// ALREADY_EXISTS is no refusal: it is how a worker that cannot attach says it
// runs the job already, and running it elsewhere would run it twice at once.
bool is_refusal(::grpc::StatusCode code) {
  return code == ::grpc::StatusCode::RESOURCE_EXHAUSTED || code == ::grpc::StatusCode::FAILED_PRECONDITION;
}

std::chrono::system_clock::time_point deadline_in(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

}  // namespace

// A call in flight, as the transport's watch sees it.
struct WatchedCall {
  virtual ~WatchedCall() = default;
  // Acts on a deadline passed (accept, heartbeats) by `now`. Calls of one
  // transport are checked one at a time.
  virtual void check(std::chrono::steady_clock::time_point now) = 0;
};

struct GrpcTransport::Impl {
  Impl(asio::any_io_executor e, TransportOptions o) : options(std::move(o)), executor(std::move(e)) {}

  TransportOptions options;
  asio::any_io_executor executor;
  // One timer for every call's accept and heartbeat deadlines, ticking while
  // calls are in flight: a call arms and cancels no timer of its own.
  // Destroyed with the GrpcTransport, not with the Impl: gRPC's threads may
  // hold the Impl a little longer (a callback's captures), past the
  // io_context the timer belongs to. With `mutex`.
  std::optional<asio::steady_timer> watch_timer{std::in_place, executor};
  bool watching = false;  // with `mutex`: the timer is armed (or its handler runs)

  struct Endpoint {
    std::string address;
    std::shared_ptr<::grpc::Channel> channel;
    std::unique_ptr<v1::Worker::Stub> stub;
  };

  mutable std::mutex mutex;
  std::condition_variable idle;
  std::unordered_map<std::string, std::shared_ptr<Endpoint>> endpoints;  // by worker id
  std::size_t in_flight = 0;
  bool closing = false;
  // Every RunJob stream in flight, so the destructor can cancel them.
  struct Run {
    std::string worker_id;
    std::function<void()> cancel;
    std::weak_ptr<WatchedCall> watched;
  };
  std::uint64_t next_run = 1;
  std::unordered_map<std::uint64_t, Run> runs;
  // when_runs_ended callers, by worker id; each runs once (see Once).
  struct Once {
    std::atomic<bool> done{false};
    std::function<void()> fn;
    void operator()() {
      if (!done.exchange(true)) fn();
    }
  };
  std::unordered_multimap<std::string, std::shared_ptr<Once>> run_waiters;

  bool runs_to(std::string_view worker_id) const {  // with `mutex` held
    return std::any_of(runs.begin(), runs.end(), [&](const auto& run) { return run.second.worker_id == worker_id; });
  }

  // One shared stub per worker, replaced when the worker's address changes.
  std::shared_ptr<Endpoint> endpoint_for(const core::WorkerInfo& worker) {
    std::lock_guard lock(mutex);
    auto& slot = endpoints[worker.id];
    if (!slot || slot->address != worker.address) {
      ::grpc::ChannelArguments args;
      // Notice a dead peer within seconds even when no call is sending, and
      // reconnect quickly to a worker that restarted on the same address.
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10'000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5'000);
      args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1'000);
      auto endpoint = std::make_shared<Endpoint>();
      endpoint->address = worker.address;
      endpoint->channel = ::grpc::CreateCustomChannel(
          worker.address, options.credentials ? options.credentials : ::grpc::InsecureChannelCredentials(), args);
      endpoint->stub = v1::Worker::NewStub(endpoint->channel);
      slot = std::move(endpoint);
    }
    return slot;
  }

  // The worker obeys only the orchestrator it registered with: the call
  // carries that registration's secret.
  void authorize(::grpc::ClientContext& context, const std::string& worker_id) const {
    if (!options.worker_secrets) return;
    if (auto secret = options.worker_secrets->find(worker_id)) attach_bearer(context, *secret);
  }

  bool begin_call() {
    std::lock_guard lock(mutex);
    if (closing) return false;
    ++in_flight;
    return true;
  }
  void end_call(std::uint64_t run_id = 0) {
    std::vector<std::shared_ptr<Once>> ready;
    {
      std::lock_guard lock(mutex);
      if (auto it = runs.find(run_id); it != runs.end()) {
        const auto worker_id = std::move(it->second.worker_id);
        runs.erase(it);
        // The scan of every run in flight only when someone waits on this worker's.
        if (run_waiters.contains(worker_id) && !runs_to(worker_id)) {
          auto [first, last] = run_waiters.equal_range(worker_id);
          for (auto w = first; w != last; ++w) ready.push_back(std::move(w->second));
          run_waiters.erase(first, last);
        }
      }
      if (--in_flight == 0) idle.notify_all();
    }
    for (const auto& waiter : ready) (*waiter)();  // outside the lock: they may call in again
  }
  std::uint64_t add_run(std::string worker_id, std::function<void()> cancel, std::weak_ptr<WatchedCall> watched) {
    std::lock_guard lock(mutex);
    runs.emplace(next_run, Run{std::move(worker_id), std::move(cancel), std::move(watched)});
    if (!watching && watch_period().count() > 0) {
      watching = true;
      arm_watch();
    }
    return next_run++;
  }

  // A quarter of the shortest deadline watched, within [10 ms, 1 s]: a
  // deadline is acted on at most that late. 0: nothing to watch.
  std::chrono::milliseconds watch_period() const {
    std::chrono::milliseconds shortest{0};
    for (const auto d : {options.accept_timeout, options.heartbeat_timeout})
      if (d.count() > 0 && (shortest.count() == 0 || d < shortest)) shortest = d;
    if (shortest.count() == 0) return shortest;
    return std::clamp<std::chrono::milliseconds>(shortest / 4, std::chrono::milliseconds(10),
                                                 std::chrono::seconds(1));
  }

  void arm_watch() {  // with `mutex` held, `watching` set
    if (!watch_timer) {  // the transport is gone
      watching = false;
      return;
    }
    watch_timer->expires_after(watch_period());
    watch_timer->async_wait([weak = weak_self](std::error_code ec) {
      if (auto self = weak.lock(); self && !ec) self->watch();
    });
  }

  void watch() {
    std::vector<std::shared_ptr<WatchedCall>> calls;
    {
      std::lock_guard lock(mutex);
      if (runs.empty() || closing) {
        watching = false;
        return;
      }
      calls.reserve(runs.size());
      for (const auto& [id, run] : runs)
        if (auto call = run.watched.lock()) calls.push_back(std::move(call));
    }
    const auto now = std::chrono::steady_clock::now();
    for (const auto& call : calls) call->check(now);
    std::lock_guard lock(mutex);
    arm_watch();
  }

  std::weak_ptr<Impl> weak_self;
};

namespace {

// One RunJob stream. Owns itself from StartCall until OnDone.
class RunCall final : public ::grpc::ClientReadReactor<v1::RunJobReply>,
                      public WatchedCall,
                      public std::enable_shared_from_this<RunCall> {
 public:
  using Handler = core::CompletionHandler<void(std::error_code, core::JobResult)>;

  RunCall(std::shared_ptr<GrpcTransport::Impl> impl, std::shared_ptr<GrpcTransport::Impl::Endpoint> endpoint,
          const core::WorkerInfo& worker, const core::Job& job, core::ProgressCallback progress, Handler handler)
      : impl_(std::move(impl)),
        endpoint_(std::move(endpoint)),
        worker_id_(worker.id),
        job_id_(job.id),
        progress_(std::move(progress)),
        handler_(std::move(handler)) {
    *request_.mutable_job() = wire::to_proto(job);
    const auto run_deadline = job.timeout.count() > 0 ? job.timeout + impl_->options.run_deadline_margin
                                                      : impl_->options.default_run_deadline;
    context_.set_deadline(deadline_in(run_deadline));
    impl_->authorize(context_, worker_id_);
  }

  void start() {
    self_ = shared_from_this();
    started_ = std::chrono::steady_clock::now();
    run_id_ = impl_->add_run(
        worker_id_,
        [weak = weak_from_this()] {
          if (auto self = weak.lock()) self->cancel();
        },
        weak_from_this());
    request_.set_offer_id(impl_->options.orchestrator_id + "-" + std::to_string(run_id_));
    endpoint_->stub->async()->RunJob(&context_, &request_, this);
    StartRead(&reply_);
    StartCall();
  }

  void cancel() {
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
    }
    context_.TryCancel();
  }

  // What the dispatcher's cancellation asks for:
  //  - partial (a cancel of the job): an accepted run's worker is asked to
  //    stop it, and the stream then carries its result, its processes gone;
  //  - core::run_hand_over: let go of the call and leave the job running (a
  //    worker keeps a job whose caller went away, for its next caller);
  //  - anything else (terminal, or partial before acceptance): let go of the
  //    call, and have the worker stop the job should it have taken it.
  void cancel(asio::cancellation_type type) {
    if (type == core::run_hand_over) {
      cancel();
      return;
    }
    bool accepted = false;
    {
      std::lock_guard lock(mutex_);
      if (has_result_ || cancelled_) return;
      accepted = accepted_;
    }
    if ((type & asio::cancellation_type::terminal) == asio::cancellation_type::none && accepted) {
      send_cancel("a cancel of the job was asked for", false);
      return;
    }
    cancel();
    // Taken back: it goes elsewhere, or gets its status here; nothing of it
    // may run on, or be kept, on the worker.
    send_cancel(accepted ? "the orchestrator let go of the run" : "the orchestrator took the job back", true);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone has the status
    last_message_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    switch (reply_.kind_case()) {
      case v1::RunJobReply::kAccepted: {
        const auto announced = std::chrono::milliseconds(reply_.accepted().heartbeat_interval_ms());
        {
          std::lock_guard lock(mutex_);
          // Taken back already (on_accept_timeout): the worker is told to
          // drop it, and the job goes elsewhere; the dispatcher does not hear
          // "accepted" either (run_end.hpp reads the end the same way).
          if (accepted_ || accept_timed_out_) break;
          accepted_ = true;
        }
        watch_heartbeats(announced);
        if (progress_) progress_(core::ProgressEvent{job_id_, worker_id_, core::Phase::accepted, {}});
        break;
      }
      case v1::RunJobReply::kEvent:
        if (progress_) {
          auto event = wire::from_proto(reply_.event());
          if (event.worker_id.empty()) event.worker_id = worker_id_;
          progress_(event);
        }
        break;
      case v1::RunJobReply::kResult: {
        std::lock_guard lock(mutex_);
        result_ = wire::from_proto(reply_.result());
        has_result_ = true;
        // The last message a worker sends: no read waits for the end of the
        // stream, so OnDone follows with the status and one callback fewer.
        return;
      }
      case v1::RunJobReply::kHeartbeat:
        break;  // its arrival is all it says
      default:
        break;  // a newer worker's message kind: ignore it
    }
    StartRead(&reply_);
  }

  void OnDone(const ::grpc::Status& status) override {
    std::error_code ec;
    core::JobResult result;
    std::string take_back;  // why the worker must not run (or keep) the job, when it might
    {
      std::lock_guard lock(mutex_);
      const detail::RunEnd end = detail::run_end({has_result_, status.ok(), cancelled_, accepted_,
                                                  accept_timed_out_, is_refusal(status.error_code()), silent_for_});
      switch (end) {
        case detail::RunEnd::result:
          result = std::move(result_);
          break;
        case detail::RunEnd::let_go:
          ec = asio::error::operation_aborted;
          result.error = "the run was cancelled by the orchestrator";
          break;
        case detail::RunEnd::taken_back:  // on_accept_timeout told the worker already
          ec = make_error_code(core::errc::worker_refused);
          result.error = fmt::format("worker {} did not accept the job within {} ms", worker_id_,
                                     impl_->options.accept_timeout.count());
          break;
        case detail::RunEnd::refused:  // a worker slow to accept refused this offer; only pings may call it dead
        case detail::RunEnd::unreachable:
          ec = make_error_code(end == detail::RunEnd::refused ? core::errc::worker_refused
                                                              : core::errc::worker_unreachable);
          result.error = fmt::format("worker {} did not take the job: {}", worker_id_, describe(status));
          // Unreachable, it goes elsewhere: should the worker have taken it after
          // all (the accepted message lost with the connection), it must not run there too.
          if (end == detail::RunEnd::unreachable) take_back = "its RunJob broke before the job was accepted";
          break;
        case detail::RunEnd::silent:
          ec = make_error_code(core::errc::worker_lost);
          result.error = fmt::format("its RunJob stream carried nothing, not even a heartbeat, for {} ms; the job "
                                     "was cancelled on the worker",
                                     silent_for_.count());
          break;
        case detail::RunEnd::broke:
          ec = make_error_code(core::errc::worker_lost);
          // The dispatcher says "worker X was lost while running the job (...)".
          result.error = fmt::format("its RunJob stream broke: {}", describe(status));
          // Reported lost: a worker that is still there must not run it on
          // unobserved (a worker keeps a job whose stream broke, for a while).
          take_back = "its RunJob stream broke; the job was reported lost";
          break;
      }
    }
    if (!take_back.empty()) send_cancel(std::move(take_back), true);
    if (result.job_id.empty()) result.job_id = job_id_;
    if (result.worker_id.empty()) result.worker_id = worker_id_;
    handler_.complete(ec, std::move(result));
    auto impl = impl_;
    const auto run_id = run_id_;
    self_.reset();  // may destroy *this
    impl->end_call(run_id);
  }

 private:
  // An accepted stream of a worker that announced heartbeats is watched for
  // silence from now on (see check()).
  void watch_heartbeats(std::chrono::milliseconds announced) {
    const auto configured = impl_->options.heartbeat_timeout;
    if (announced.count() == 0 || configured.count() == 0) return;
    heartbeat_timeout_ms_.store(std::max(configured, 3 * announced).count(), std::memory_order_relaxed);
  }

  // The transport's watch: not accepted within the accept timeout, the offer
  // is taken back; accepted, and silent for the heartbeat timeout, the job is
  // lost and cancelled on the worker (the stream that would tell it may be
  // the thing that is stuck).
  void check(std::chrono::steady_clock::time_point now) override {
    bool accepted = false;
    {
      std::lock_guard lock(mutex_);
      if (has_result_ || cancelled_ || accept_timed_out_ || silent_for_.count() > 0) return;
      accepted = accepted_;
    }
    if (!accepted) {
      const auto timeout = impl_->options.accept_timeout;
      if (timeout.count() > 0 && now - started_ >= timeout) on_accept_timeout();
      return;
    }
    const std::chrono::milliseconds timeout(heartbeat_timeout_ms_.load(std::memory_order_relaxed));
    const auto last = std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_message_.load(std::memory_order_relaxed)));
    if (timeout.count() == 0 || now - last < timeout) return;
    {
      std::lock_guard lock(mutex_);
      if (has_result_ || cancelled_) return;
      silent_for_ = timeout;
    }
    send_cancel(fmt::format("no message on the RunJob stream for {} ms", timeout.count()), true);
    context_.TryCancel();
  }

  // Best effort, bounded by the accept timeout; counted as a call in flight.
  // `taken_back`: the job is not this worker's any more (see CancelRequest).
  void send_cancel(std::string reason, bool taken_back) {
    if (!impl_->begin_call()) return;
    struct CancelCall {
      ::grpc::ClientContext context;
      v1::CancelRequest request;
      v1::CancelReply reply;
    };
    auto call = std::make_shared<CancelCall>();
    const auto accept_timeout = impl_->options.accept_timeout;
    call->context.set_deadline(deadline_in(accept_timeout.count() > 0 ? accept_timeout : std::chrono::seconds(10)));
    impl_->authorize(call->context, worker_id_);  // or the worker refuses it
    call->request.set_job_id(job_id_);
    call->request.set_reason(std::move(reason));
    call->request.set_taken_back(taken_back);
    call->request.set_offer_id(request_.offer_id());
    endpoint_->stub->async()->Cancel(&call->context, &call->request, &call->reply,
                                     [impl = impl_, endpoint = endpoint_, call](const ::grpc::Status&) {
                                       impl->end_call();
                                     });
  }

  void on_accept_timeout() {
    {
      std::lock_guard lock(mutex_);
      if (accepted_ || has_result_ || cancelled_) return;
      accept_timed_out_ = true;
    }
    context_.TryCancel();
    // It goes elsewhere: a worker that took it meanwhile must not run it too.
    send_cancel(fmt::format("not accepted within {} ms", impl_->options.accept_timeout.count()), true);
  }

  std::shared_ptr<GrpcTransport::Impl> impl_;
  std::shared_ptr<GrpcTransport::Impl::Endpoint> endpoint_;
  std::string worker_id_;
  std::string job_id_;
  core::ProgressCallback progress_;
  Handler handler_;
  std::chrono::steady_clock::time_point started_;
  std::atomic<std::chrono::steady_clock::rep> last_message_{0};
  std::atomic<std::chrono::milliseconds::rep> heartbeat_timeout_ms_{0};  // 0: not watched

  ::grpc::ClientContext context_;
  v1::RunJobRequest request_;
  v1::RunJobReply reply_;

  std::mutex mutex_;
  bool accepted_ = false;
  bool accept_timed_out_ = false;
  bool cancelled_ = false;
  bool has_result_ = false;
  std::chrono::milliseconds silent_for_{0};  // set: reported lost for want of heartbeats
  core::JobResult result_;
  std::shared_ptr<RunCall> self_;
  std::uint64_t run_id_ = 0;
};

struct PingCall {
  ::grpc::ClientContext context;
  v1::PingRequest request;
  v1::PingReply reply;
  std::atomic<bool> cancelled{false};  // by its caller: the call's CANCELLED is theirs, not the worker's

  // The cancellation slot's handler (GrpcTransport::CancelFn).
  static void cancel(const std::shared_ptr<void>& erased, asio::cancellation_type type) {
    if ((type & asio::cancellation_type::terminal) == asio::cancellation_type::none) return;
    auto* call = static_cast<PingCall*>(erased.get());
    call->cancelled.store(true, std::memory_order_release);
    call->context.TryCancel();
  }
};

}  // namespace

GrpcTransport::GrpcTransport(asio::any_io_executor executor, TransportOptions options)
    : executor_(executor), impl_(std::make_shared<Impl>(executor, std::move(options))) {
  impl_->weak_self = impl_;
}

GrpcTransport::~GrpcTransport() {
  std::vector<std::function<void()>> cancels;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->closing = true;
    for (const auto& [id, run] : impl_->runs) cancels.push_back(run.cancel);
  }
  for (auto& cancel : cancels) cancel();  // outside the lock: OnDone takes it
  // gRPC owns the reactors until OnDone; pings end by their short deadlines.
  std::unique_lock lock(impl_->mutex);
  impl_->idle.wait(lock, [&] { return impl_->in_flight == 0; });
  impl_->watch_timer.reset();  // while its io_context is still there
}

GrpcTransport::CancelFn GrpcTransport::start_run(const core::WorkerInfo& worker, const core::Job& job,
                                                 core::ProgressCallback progress, RunHandler handler) {
  if (!impl_->begin_call()) {
    core::JobResult result;
    result.job_id = job.id;
    result.worker_id = worker.id;
    result.error = "the transport is shutting down";
    handler.complete(asio::error::operation_aborted, std::move(result));
    return {};
  }
  auto call = std::make_shared<RunCall>(impl_, impl_->endpoint_for(worker), worker, job, std::move(progress),
                                        std::move(handler));
  call->start();
  return CancelFn{call, [](const std::shared_ptr<void>& p, asio::cancellation_type type) {
                    static_cast<RunCall*>(p.get())->cancel(type);
                  }};
}

GrpcTransport::CancelFn GrpcTransport::start_ping(const core::WorkerInfo& worker, std::chrono::milliseconds deadline,
                                                  PingHandler handler) {
  if (!impl_->begin_call()) {
    handler.complete(asio::error::operation_aborted, core::PingReply{});
    return {};
  }
  auto endpoint = impl_->endpoint_for(worker);
  auto call = std::make_shared<PingCall>();
  call->context.set_deadline(deadline_in(deadline));
  impl_->authorize(call->context, worker.id);
  call->request.set_orchestrator_id(impl_->options.orchestrator_id);
  auto shared_handler = std::make_shared<PingHandler>(std::move(handler));
  endpoint->stub->async()->Ping(
      &call->context, &call->request, &call->reply,
      [impl = impl_, endpoint, call, shared_handler](::grpc::Status status) {
        core::PingReply reply;
        std::error_code ec;
        if (status.ok()) {
          reply.worker_id = call->reply.worker_id();
          reply.incarnation = call->reply.incarnation();
          reply.state = wire::from_proto(call->reply.state());
          reply.capacity = call->reply.capacity();
          reply.running_jobs.assign(call->reply.running_jobs().begin(), call->reply.running_jobs().end());
        } else if (status.error_code() == ::grpc::StatusCode::CANCELLED &&
                   call->cancelled.load(std::memory_order_acquire)) {
          ec = asio::error::operation_aborted;
        } else if (status.error_code() == ::grpc::StatusCode::DEADLINE_EXCEEDED) {
          ec = make_error_code(core::errc::ping_timeout);
        } else {
          ec = make_error_code(core::errc::worker_unreachable);
        }
        shared_handler->complete(ec, std::move(reply));
        impl->end_call();
      });
  return CancelFn{call, &PingCall::cancel};
}

void GrpcTransport::when_runs_ended(std::string_view worker_id, std::chrono::milliseconds timeout,
                                    std::function<void()> then) {
  auto waiter = std::make_shared<Impl::Once>();
  waiter->fn = std::move(then);
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->runs_to(worker_id)) {
      impl_->run_waiters.emplace(std::string(worker_id), waiter);
      auto timer = std::make_shared<asio::steady_timer>(executor_, timeout);
      timer->async_wait([timer, waiter](std::error_code) { (*waiter)(); });
      return;
    }
  }
  (*waiter)();
}

void GrpcTransport::forget(std::string_view worker_id) {
  std::lock_guard lock(impl_->mutex);
  impl_->endpoints.erase(std::string(worker_id));
}

std::size_t GrpcTransport::calls_in_flight() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->in_flight;
}

}  // namespace blacktree::grpc
