// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// WorkerService over real gRPC on loopback ports: a runner that throws fails
// its job and not the worker, and shutdown() drains, cancels and deregisters.
// The orchestrator side is the real one too (GrpcTransport, OrchestratorService).

#include <blacktree/core/worker_pool.hpp>
#include <blacktree/grpc/error.hpp>
#include <blacktree/grpc/orchestrator_service.hpp>
#include <blacktree/grpc/registrar.hpp>
#include <blacktree/grpc/transport.hpp>
#include <blacktree/grpc/worker_service.hpp>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

namespace core = blacktree::core;
namespace bgrpc = blacktree::grpc;
using namespace std::chrono_literals;

namespace {

// Jobs whose id says what to do: throw, wait to be cancelled, wait for the
// test's go (ignoring cancellation), or succeed at once.
class ScriptedRunner final : public blacktree::worker::JobRunner {
 public:
  core::JobResult run(const core::Job& job, const blacktree::worker::EmitFn&, std::stop_token stop) override {
    {
      std::lock_guard lock(mutex_);
      if (armed_) started_.set_value();
      armed_ = false;
    }
    core::JobResult result;
    if (job.id == "throws") throw std::runtime_error("disk on fire");
    if (job.id == "throws-int") throw 42;
    std::unique_lock lock(mutex_);
    if (job.id == "until-cancelled") {
      std::condition_variable_any cv;
      cv.wait(lock, stop, [] { return false; });
      result.error = "cancelled";
      return result;
    }
    if (job.id == "until-go") {
      go_cv_.wait(lock, [this] { return go_; });
      result.success = true;
      return result;
    }
    result.success = true;
    return result;
  }

  /// Ready once a job started (one job per test at a time).
  std::future<void> next_start() {
    std::lock_guard lock(mutex_);
    started_ = {};
    armed_ = true;
    return started_.get_future();
  }
  void go() {
    std::lock_guard lock(mutex_);
    go_ = true;
    go_cv_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable go_cv_;
  bool go_ = false;
  bool armed_ = false;
  std::promise<void> started_;
};

// A WorkerService on a free loopback port, and a GrpcTransport to call it.
struct Rig {
  explicit Rig(std::string id = "w1")
      : service(runner, {id, "incarnation-1", 2}),
        transport(io.get_executor(), bgrpc::TransportOptions{"orchestrator-1", 5s, 30s, 5s, nullptr}) {
    ::grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    REQUIRE(server);
    REQUIRE(port > 0);
    worker.id = std::move(id);
    worker.address = "127.0.0.1:" + std::to_string(port);
    worker.capacity = 2;
    worker.incarnation = "incarnation-1";
    thread = std::thread([this] { io.run(); });
  }
  ~Rig() {
    runner.go();  // nothing may stay blocked past the test
    server->Shutdown(std::chrono::system_clock::now() + 2s);
    work.reset();
    io.stop();
    thread.join();
  }

  // Starts job `id`; the future holds the transport's outcome.
  std::future<std::pair<std::error_code, core::JobResult>> run(const std::string& id) {
    auto done = std::make_shared<std::promise<std::pair<std::error_code, core::JobResult>>>();
    auto outcome = done->get_future();
    jobs.push_back(std::make_unique<core::Job>());
    jobs.back()->id = id;
    transport.async_run(worker, *jobs.back(), {}, [done](std::error_code ec, core::JobResult result) {
      done->set_value({ec, std::move(result)});
    });
    return outcome;
  }

  // Starts job `id` and returns once its runner runs it.
  std::future<std::pair<std::error_code, core::JobResult>> run_started(const std::string& id) {
    auto started = runner.next_start();
    auto outcome = run(id);
    REQUIRE(started.wait_for(30s) == std::future_status::ready);
    return outcome;
  }

  core::Result<void> shutdown(std::chrono::milliseconds drain_timeout, std::chrono::milliseconds cancel_grace) {
    bgrpc::ShutdownOptions options;
    options.drain_timeout = drain_timeout;
    options.cancel_grace = cancel_grace;
    return service.shutdown(nullptr, options);
  }

  static std::pair<std::error_code, core::JobResult> wait(std::future<std::pair<std::error_code, core::JobResult>>& f) {
    REQUIRE(f.wait_for(30s) == std::future_status::ready);
    return f.get();
  }

  ScriptedRunner runner;
  bgrpc::WorkerService service;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  bgrpc::GrpcTransport transport;
  std::unique_ptr<::grpc::Server> server;
  int port = 0;
  core::WorkerInfo worker;
  std::vector<std::unique_ptr<core::Job>> jobs;  // alive until their run completes
  std::thread thread;
};

}  // namespace

TEST_CASE("WorkerService: a runner that throws fails its job and the worker goes on", "[worker_service]") {
  Rig rig;

  auto thrown = rig.run("throws");
  auto [ec, result] = Rig::wait(thrown);
  CHECK_FALSE(ec);  // the job ran and failed: a result, not a lost worker
  CHECK_FALSE(result.success);
  CHECK(result.job_id == "throws");
  CHECK(result.worker_id == "w1");
  CHECK_THAT(result.error, Catch::Contains("disk on fire"));

  auto odd = rig.run("throws-int");
  auto [odd_ec, odd_result] = Rig::wait(odd);
  CHECK_FALSE(odd_ec);
  CHECK_FALSE(odd_result.success);
  CHECK_THAT(odd_result.error, Catch::Contains("not a std::exception"));

  auto fine = rig.run("fine");
  auto [fine_ec, fine_result] = Rig::wait(fine);
  CHECK_FALSE(fine_ec);
  CHECK(fine_result.success);
  CHECK(rig.service.running() == 0);
}

TEST_CASE("WorkerService: shutdown lets a running job finish within the drain deadline", "[worker_service]") {
  Rig rig;
  auto job = rig.run_started("until-go");
  auto stopped = std::async(std::launch::async, [&] { return rig.shutdown(30s, 30s); });
  // Draining: a new job is refused, so the orchestrator offers it elsewhere.
  auto refused = rig.run("fine");
  // The drain may not have begun when the offer arrives; then it runs and succeeds.
  auto [refused_ec, refused_result] = Rig::wait(refused);
  CHECK((refused_ec == core::errc::worker_refused || refused_result.success));

  rig.runner.go();
  REQUIRE(stopped.wait_for(30s) == std::future_status::ready);
  const auto outcome = stopped.get();
  CHECK(outcome.has_value());
  auto [ec, result] = Rig::wait(job);
  CHECK_FALSE(ec);
  CHECK(result.success);
}

TEST_CASE("WorkerService: shutdown cancels what still runs at the drain deadline", "[worker_service]") {
  Rig rig;
  auto job = rig.run_started("until-cancelled");
  const auto outcome = rig.shutdown(100ms, 30s);
  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error().code() == bgrpc::errc::drain_deadline_exceeded);
  CHECK_THAT(outcome.error().message(), Catch::Contains("cancelled 1 job(s)"));
  CHECK(rig.service.running() == 0);
  auto [ec, result] = Rig::wait(job);
  CHECK_FALSE(ec);
  CHECK_FALSE(result.success);
  CHECK(result.error == "cancelled");
}

TEST_CASE("WorkerService: shutdown gives up on a job that ignores cancellation", "[worker_service]") {
  Rig rig;
  auto job = rig.run_started("until-go");
  const auto outcome = rig.shutdown(50ms, 50ms);
  REQUIRE_FALSE(outcome.has_value());
  CHECK(outcome.error().code() == bgrpc::errc::jobs_still_running);
  CHECK(rig.service.running() == 1);
  rig.runner.go();
  auto [ec, result] = Rig::wait(job);
  CHECK(result.success);
}

TEST_CASE("WorkerService: shutdown deregisters through the registrar", "[worker_service]") {
  Rig rig("leaving");
  core::WorkerPool pool(rig.io.get_executor());
  bgrpc::OrchestratorService orchestrator(pool, {"orchestrator-1", "", 1000ms, 500ms});
  ::grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&orchestrator);
  auto server = builder.BuildAndStart();
  REQUIRE(server);

  bgrpc::RegistrarOptions options;
  options.orchestrator_address = "127.0.0.1:" + std::to_string(port);
  options.self = rig.worker;
  std::promise<void> registered;
  std::once_flag once;
  bgrpc::Registrar registrar(
      options, [&](const std::string&) { std::call_once(once, [&] { registered.set_value(); }); }, {});
  registrar.start();
  REQUIRE(registered.get_future().wait_for(30s) == std::future_status::ready);
  REQUIRE(pool.find("leaving"));

  const auto outcome = rig.service.shutdown(&registrar);
  CHECK(outcome.has_value());
  CHECK_FALSE(pool.find("leaving"));
  server->Shutdown(std::chrono::system_clock::now() + 2s);
}
