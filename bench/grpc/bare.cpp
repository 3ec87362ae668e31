// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The baseline: the same RPCs with nothing but gRPC's callback API on both
// sides. RunJob carries the same request and the same three reply messages a
// WorkerService sends for a job that succeeds at once, but the server writes
// them from the gRPC thread (no job thread, no runner) and the client reads
// them in a plain ClientReadReactor (no asio, no handler posting). Ping is
// the floor: one unary round trip.

#include "bench.hpp"
#include "loop.hpp"

#include <blacktree/v1/blacktree.grpc.pb.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <stdexcept>
#include <string>

namespace blacktree::bench::grpc {
namespace {

namespace v1 = ::blacktree::v1;

void stamp_now(google::protobuf::Timestamp* ts) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  ts->set_seconds(ns / 1'000'000'000);
  ts->set_nanos(static_cast<int>(ns % 1'000'000'000));
}

const char* const kWorkerId = "bench-worker";

// accepted, then the result with the call's end (OK) in one batch: what
// WorkerService sends for a job that prints nothing.
class BareRun final : public ::grpc::ServerWriteReactor<v1::RunJobReply> {
 public:
  explicit BareRun(const v1::RunJobRequest* request) {
    replies_[0].mutable_accepted()->set_worker_id(kWorkerId);
    auto* result = replies_[1].mutable_result();
    result->set_job_id(request->job().job_id());
    result->set_success(true);
    result->set_worker_id(kWorkerId);
    stamp_now(result->mutable_started_at());
    stamp_now(result->mutable_finished_at());
    StartWrite(&replies_[0]);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(::grpc::Status(::grpc::StatusCode::CANCELLED, "the caller went away"));
      return;
    }
    StartWriteAndFinish(&replies_[1], ::grpc::WriteOptions(), ::grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  v1::RunJobReply replies_[2];
};

class BareWorker final : public v1::Worker::CallbackService {
 public:
  ::grpc::ServerWriteReactor<v1::RunJobReply>* RunJob(::grpc::CallbackServerContext*,
                                                      const v1::RunJobRequest* request) override {
    return new BareRun(request);
  }
  ::grpc::ServerUnaryReactor* Ping(::grpc::CallbackServerContext* context, const v1::PingRequest*,
                                   v1::PingReply* reply) override {
    reply->set_worker_id(kWorkerId);
    reply->set_state(v1::WORKER_STATE_FREE);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(::grpc::Status::OK);
    return reactor;
  }
};

class BareServer final : public Server {
 public:
  BareServer() {
    ::grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) throw std::runtime_error("the bare server did not start");
  }
  ~BareServer() override { server_->Shutdown(); }
  std::string address() const override { return "127.0.0.1:" + std::to_string(port_); }

 private:
  BareWorker service_;
  int port_ = 0;
  std::unique_ptr<::grpc::Server> server_;
};

// The request the transport sends for the benchmark's job (wire::to_proto of
// the same fields), built by hand.
v1::RunJobRequest make_request(const std::string& job_id) {
  v1::RunJobRequest request;
  auto* job = request.mutable_job();
  job->set_job_id(job_id);
  job->set_repo_url("octo/hello");
  job->set_branch("main");
  job->set_dockerfile_path("Dockerfile");
  job->set_context_dir(".");
  job->set_image_name("registry.example/hello:1");
  job->set_github_token("t");
  return request;
}

class StreamCall final : public ::grpc::ClientReadReactor<v1::RunJobReply> {
 public:
  StreamCall(v1::Worker::Stub* stub, ClosedLoop* loop, std::size_t chain, std::string job_id)
      : loop_(loop), chain_(chain), request_(make_request(job_id)) {
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    stub->async()->RunJob(&context_, &request_, this);
    StartRead(&reply_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (reply_.kind_case() == v1::RunJobReply::kResult) success_ = reply_.result().success();
    StartRead(&reply_);
  }

  void OnDone(const ::grpc::Status& status) override {
    const bool ok = status.ok() && success_;
    auto* loop = loop_;
    const auto chain = chain_;
    delete this;
    loop->finished(chain, ok);
  }

 private:
  ClosedLoop* loop_;
  std::size_t chain_;
  ::grpc::ClientContext context_;
  v1::RunJobRequest request_;
  v1::RunJobReply reply_;
  bool success_ = false;
};

struct PingCall {
  ::grpc::ClientContext context;
  v1::PingRequest request;
  v1::PingReply reply;
};

}  // namespace

double process_cpu_seconds() { return process_cpu_seconds_inline(); }

std::unique_ptr<Server> start_bare_server() { return std::make_unique<BareServer>(); }

Sample run_bare_stream(const std::string& address, std::size_t concurrency, std::size_t calls) {
  auto channel = ::grpc::CreateChannel(address, ::grpc::InsecureChannelCredentials());
  auto stub = v1::Worker::NewStub(channel);
  ClosedLoop loop(concurrency, calls);
  std::atomic<std::uint64_t> next_id{0};
  return loop.run([&](std::size_t chain) {
    new StreamCall(stub.get(), &loop, chain, "bench-" + std::to_string(next_id.fetch_add(1)));
  });
}

Sample run_bare_ping(const std::string& address, std::size_t concurrency, std::size_t calls) {
  auto channel = ::grpc::CreateChannel(address, ::grpc::InsecureChannelCredentials());
  auto stub = v1::Worker::NewStub(channel);
  ClosedLoop loop(concurrency, calls);
  return loop.run([&](std::size_t chain) {
    auto* call = new PingCall;
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    call->request.set_orchestrator_id("bench");
    stub->async()->Ping(&call->context, &call->request, &call->reply, [call, &loop, chain](::grpc::Status status) {
      const bool ok = status.ok();
      delete call;
      loop.finished(chain, ok);
    });
  });
}

}  // namespace blacktree::bench::grpc
