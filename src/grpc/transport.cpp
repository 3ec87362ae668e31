// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/grpc/transport.hpp>

#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>

#include <blacktree/v1/blacktree.grpc.pb.h>

#include <asio/steady_timer.hpp>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <unordered_map>

namespace blacktree::grpc {
namespace {

namespace v1 = ::blacktree::v1;
using core::errc;

std::string describe(const ::grpc::Status& status) {
  return fmt::format("{} ({})", status.error_message().empty() ? "no detail" : status.error_message(),
                     static_cast<int>(status.error_code()));
}

bool is_refusal(::grpc::StatusCode code) {
  return code == ::grpc::StatusCode::RESOURCE_EXHAUSTED || code == ::grpc::StatusCode::FAILED_PRECONDITION ||
         code == ::grpc::StatusCode::ALREADY_EXISTS;
}

std::chrono::system_clock::time_point deadline_in(std::chrono::milliseconds d) {
  return std::chrono::system_clock::now() + d;
}

}  // namespace

struct GrpcTransport::Impl {
  TransportOptions options;
  asio::any_io_executor executor;

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
  std::uint64_t next_run = 1;
  std::unordered_map<std::uint64_t, std::function<void()>> runs;

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
    std::lock_guard lock(mutex);
    if (run_id) runs.erase(run_id);
    if (--in_flight == 0) idle.notify_all();
  }
  std::uint64_t add_run(std::function<void()> cancel) {
    std::lock_guard lock(mutex);
    runs.emplace(next_run, std::move(cancel));
    return next_run++;
  }
};

namespace {

// One RunJob stream. Owns itself from StartCall until OnDone.
class RunCall final : public ::grpc::ClientReadReactor<v1::RunJobReply>,
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
        handler_(std::move(handler)),
        accept_timer_(impl_->executor) {
    *request_.mutable_job() = wire::to_proto(job);
    const auto run_deadline = job.timeout.count() > 0 ? job.timeout + impl_->options.run_deadline_margin
                                                      : impl_->options.default_run_deadline;
    context_.set_deadline(deadline_in(run_deadline));
    impl_->authorize(context_, worker_id_);
  }

  void start() {
    self_ = shared_from_this();
    run_id_ = impl_->add_run([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->cancel();
    });
    accept_timer_.expires_after(impl_->options.accept_timeout);
    accept_timer_.async_wait([weak = weak_from_this()](std::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->on_accept_timeout();
    });
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

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream ended; OnDone has the status
    switch (reply_.kind_case()) {
      case v1::RunJobReply::kAccepted: {
        std::lock_guard lock(mutex_);
        accepted_ = true;
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
        break;
      }
      default:
        break;  // a newer worker's message kind: ignore it
    }
    StartRead(&reply_);
  }

  void OnDone(const ::grpc::Status& status) override {
    asio::post(accept_timer_.get_executor(), [self = self_] { self->accept_timer_.cancel(); });
    std::error_code ec;
    core::JobResult result;
    {
      std::lock_guard lock(mutex_);
      if (has_result_ && status.ok()) {
        result = std::move(result_);
      } else if (cancelled_) {
        ec = asio::error::operation_aborted;
        result.error = "the run was cancelled by the orchestrator";
      } else if (!accepted_) {
        ec = is_refusal(status.error_code()) ? make_error_code(errc::worker_refused)
                                             : make_error_code(errc::worker_unreachable);
        result.error = accept_timed_out_
                           ? fmt::format("worker {} did not accept the job within {} ms", worker_id_,
                                         impl_->options.accept_timeout.count())
                           : fmt::format("worker {} did not take the job: {}", worker_id_, describe(status));
      } else {
        ec = make_error_code(errc::worker_lost);
        // The dispatcher says "worker X was lost while running the job (...)".
        result.error = fmt::format("its RunJob stream broke: {}", describe(status));
      }
    }
    if (result.job_id.empty()) result.job_id = job_id_;
    if (result.worker_id.empty()) result.worker_id = worker_id_;
    handler_.complete(ec, std::move(result));
    auto impl = impl_;
    const auto run_id = run_id_;
    self_.reset();  // may destroy *this
    impl->end_call(run_id);
  }

 private:
  void on_accept_timeout() {
    {
      std::lock_guard lock(mutex_);
      if (accepted_ || has_result_) return;
      accept_timed_out_ = true;
    }
    context_.TryCancel();
  }

  std::shared_ptr<GrpcTransport::Impl> impl_;
  std::shared_ptr<GrpcTransport::Impl::Endpoint> endpoint_;
  std::string worker_id_;
  std::string job_id_;
  core::ProgressCallback progress_;
  Handler handler_;
  asio::steady_timer accept_timer_;

  ::grpc::ClientContext context_;
  v1::RunJobRequest request_;
  v1::RunJobReply reply_;

  std::mutex mutex_;
  bool accepted_ = false;
  bool accept_timed_out_ = false;
  bool cancelled_ = false;
  bool has_result_ = false;
  core::JobResult result_;
  std::shared_ptr<RunCall> self_;
  std::uint64_t run_id_ = 0;
};

struct PingCall {
  ::grpc::ClientContext context;
  v1::PingRequest request;
  v1::PingReply reply;
};

}  // namespace

GrpcTransport::GrpcTransport(asio::any_io_executor executor, TransportOptions options)
    : executor_(executor), impl_(std::make_shared<Impl>()) {
  impl_->options = std::move(options);
  impl_->executor = std::move(executor);
}

GrpcTransport::~GrpcTransport() {
  std::unordered_map<std::uint64_t, std::function<void()>> runs;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->closing = true;
    runs = impl_->runs;
  }
  for (auto& [id, cancel] : runs) cancel();  // outside the lock: OnDone takes it
  // gRPC owns the reactors until OnDone; pings end by their short deadlines.
  std::unique_lock lock(impl_->mutex);
  impl_->idle.wait(lock, [&] { return impl_->in_flight == 0; });
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
  return CancelFn{call, [](const std::shared_ptr<void>& p) { static_cast<RunCall*>(p.get())->cancel(); }};
}

void GrpcTransport::start_ping(const core::WorkerInfo& worker, std::chrono::milliseconds deadline,
                               PingHandler handler) {
  if (!impl_->begin_call()) {
    handler.complete(asio::error::operation_aborted, core::PingReply{});
    return;
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
        } else if (status.error_code() == ::grpc::StatusCode::DEADLINE_EXCEEDED) {
          ec = make_error_code(errc::ping_timeout);
        } else {
          ec = make_error_code(errc::worker_unreachable);
        }
        shared_handler->complete(ec, std::move(reply));
        impl->end_call();
      });
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
