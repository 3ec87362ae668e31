// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree: GrpcTransport::async_run (the orchestrator's side: asio
// completion handlers, the accept timer, the wire mapping) against an
// in-process WorkerService (the worker's side: capacity bookkeeping, one
// thread per running job, the outbox) whose JobRunner succeeds at once.

#include "bench.hpp"
#include "loop.hpp"

#include <blacktree/grpc/transport.hpp>
#include <blacktree/grpc/worker_service.hpp>
#include <blacktree/worker/build_spec.hpp>
#include <blacktree/worker/noop_runner.hpp>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <stdexcept>
#include <thread>

namespace blacktree::bench::grpc {
namespace {

class BlacktreeServer final : public Server {
 public:
  explicit BlacktreeServer(unsigned capacity) : service_(runner_, {"bench-worker", "bench-incarnation", capacity}) {
    ::grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    if (!server_ || port_ == 0) throw std::runtime_error("the WorkerService server did not start");
  }
  ~BlacktreeServer() override { server_->Shutdown(); }
  std::string address() const override { return "127.0.0.1:" + std::to_string(port_); }

 private:
  worker::NoopRunner runner_;  // the worker's --runner noop
  blacktree::grpc::WorkerService service_;
  int port_ = 0;
  std::unique_ptr<::grpc::Server> server_;
};

}  // namespace

std::unique_ptr<Server> start_blacktree_server(unsigned capacity) {
  return std::make_unique<BlacktreeServer>(capacity);
}

Sample run_blacktree(const std::string& address, std::size_t concurrency, std::size_t calls, unsigned io_threads) {
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::vector<std::thread> threads;
  for (unsigned i = 0; i < std::max(1u, io_threads); ++i) threads.emplace_back([&] { io.run(); });

  Sample sample;
  {
    blacktree::grpc::TransportOptions options;
    options.orchestrator_id = "bench-orchestrator";
    blacktree::grpc::GrpcTransport transport(io.get_executor(), options);
    core::WorkerInfo worker;
    worker.id = "bench-worker";
    worker.address = address;
    worker.capacity = static_cast<std::uint32_t>(concurrency);

    std::atomic<std::uint64_t> next_id{0};
    std::atomic<std::uint64_t> events{0};
    ClosedLoop loop(concurrency, calls);
    sample = loop.run([&](std::size_t chain) {
      core::Job job;
      job.id = "bench-" + std::to_string(next_id.fetch_add(1));
      job.payload = core::Payload(blacktree::worker::BuildSpec{"octo/hello", "main", "Dockerfile", ".",
                                                               "registry.example/hello:1", core::Secret("t"), {}});
      // The dispatcher hands every event on (to the events exchange); count them instead.
      transport.async_run(worker, job, [&events](const core::ProgressEvent&) { events.fetch_add(1); },
                          [&loop, chain](std::error_code ec, core::JobResult result) {
                            loop.finished(chain, !ec && result.success);
                          });
    });
  }  // the transport waits for its calls to let go
  work.reset();
  for (auto& t : threads) t.join();
  return sample;
}

}  // namespace blacktree::bench::grpc
