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

#include "grpc/run_end.hpp"

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <catch2/catch.hpp>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

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
      ++starts_[job.id];
      thread_ids_.insert(::gettid());  // kernel thread ids: a new thread gets a new one
      std::array<char, 16> name{};
      ::pthread_getname_np(::pthread_self(), name.data(), name.size());
      thread_names_[job.id] = name.data();
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

  bool immediate() const noexcept override { return immediate_.load(); }
  void set_immediate(bool on) { immediate_.store(on); }
  std::string thread_name(const std::string& job_id) {
    std::lock_guard lock(mutex_);
    return thread_names_[job_id];
  }

  // Job "slow-cleanup" holds its thread here as a long removal would, until
  // the test says its result arrived: were the result sent after this, it
  // would not arrive in time.
  void after_result(const core::Job& job) noexcept override {
    if (job.id != "slow-cleanup") return;
    std::unique_lock lock(mutex_);
    cleanup_saw_delivery_ = go_cv_.wait_for(lock, 20s, [this] { return delivered_; });
    cleaned_ = true;
    go_cv_.notify_all();
  }
  void delivered() {
    std::lock_guard lock(mutex_);
    delivered_ = true;
    go_cv_.notify_all();
  }
  /// Whether after_result ran for "slow-cleanup", after its result arrived.
  bool cleaned_after_delivery(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return go_cv_.wait_for(lock, timeout, [this] { return cleaned_; }) && cleanup_saw_delivery_;
  }

  /// Ready once a job started (one job per test at a time).
  std::future<void> next_start() {
    std::lock_guard lock(mutex_);
    started_ = {};
    armed_ = true;
    return started_.get_future();
  }
  int starts(const std::string& id) {
    std::lock_guard lock(mutex_);
    return starts_[id];
  }
  void go() {
    std::lock_guard lock(mutex_);
    go_ = true;
    go_cv_.notify_all();
  }
  /// The distinct threads that ran jobs.
  std::size_t threads() {
    std::lock_guard lock(mutex_);
    return thread_ids_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable go_cv_;
  bool go_ = false;
  bool delivered_ = false;
  bool cleaned_ = false;
  bool cleanup_saw_delivery_ = false;
  bool armed_ = false;
  std::promise<void> started_;
  std::map<std::string, int> starts_;
  std::set<pid_t> thread_ids_;
  std::map<std::string, std::string> thread_names_;  // by job id
  std::atomic<bool> immediate_{false};
};

bgrpc::TransportOptions test_transport_options() {
  return bgrpc::TransportOptions{"orchestrator-1", 5s, 30s, 5s, nullptr};
}

bgrpc::WorkerServiceOptions test_worker_options(std::string id) {
  bgrpc::WorkerServiceOptions options;
  options.worker_id = std::move(id);
  options.incarnation = "incarnation-1";
  options.capacity = 2;
  return options;
}

// Holds the first message of the next RunJob once arm()ed (its "accepted")
// until release(): what its caller sees when the worker dies, or the network
// fails, between the worker taking a job and that word arriving.
class HoldAccepted final : public ::grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  ::grpc::experimental::Interceptor* CreateServerInterceptor(::grpc::experimental::ServerRpcInfo* info) override {
    if (std::string_view(info->method()) != "/blacktree.v1.Worker/RunJob") return nullptr;
    std::lock_guard lock(mutex_);
    if (!armed_) return nullptr;
    armed_ = false;
    return new Interceptor(*this);
  }

  void arm() {
    std::lock_guard lock(mutex_);
    armed_ = true;
  }
  /// Whether a message is held now (waits for one for up to 30 s).
  bool wait_held() {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, 30s, [this] { return held_ != nullptr; });
  }
  void release() {
    ::grpc::experimental::InterceptorBatchMethods* held = nullptr;
    {
      std::lock_guard lock(mutex_);
      std::swap(held, held_);
    }
    if (held) held->Proceed();
  }

 private:
  class Interceptor final : public ::grpc::experimental::Interceptor {
   public:
    explicit Interceptor(HoldAccepted& factory) : factory_(factory) {}
    void Intercept(::grpc::experimental::InterceptorBatchMethods* methods) override {
      if (!holding_done_ &&
          methods->QueryInterceptionHookPoint(::grpc::experimental::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
        holding_done_ = true;
        std::lock_guard lock(factory_.mutex_);
        factory_.held_ = methods;
        factory_.cv_.notify_all();
        return;  // release() proceeds
      }
      methods->Proceed();
    }

   private:
    HoldAccepted& factory_;
    bool holding_done_ = false;
  };

  std::mutex mutex_;
  std::condition_variable cv_;
  bool armed_ = false;
  ::grpc::experimental::InterceptorBatchMethods* held_ = nullptr;
};

// A WorkerService on a free loopback port, and a GrpcTransport to call it.
// What the service told its log function, for tests to wait on.
struct ServiceEvents {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<std::pair<bgrpc::WorkerServiceEvent, std::string>> seen;  // event, job id

  void add(bgrpc::WorkerServiceEvent event, std::string_view job_id) {
    std::lock_guard lock(mutex);
    seen.emplace_back(event, std::string(job_id));
    cv.notify_all();
  }
  std::size_t count(bgrpc::WorkerServiceEvent event) {
    std::lock_guard lock(mutex);
    return static_cast<std::size_t>(
        std::count_if(seen.begin(), seen.end(), [event](const auto& e) { return e.first == event; }));
  }
  bool wait_for(bgrpc::WorkerServiceEvent event, const std::string& job_id) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, 30s, [&] {
      return std::find(seen.begin(), seen.end(), std::pair(event, job_id)) != seen.end();
    });
  }
};

struct Rig {
  explicit Rig(std::string id = "w1", bgrpc::TransportOptions transport_options = test_transport_options(),
               std::chrono::milliseconds heartbeat_interval = 5s, std::chrono::milliseconds orphan_grace = 600s,
               std::size_t max_kept_results = 1024)
      : service(runner, [&] {
          auto options = test_worker_options(id);
          options.heartbeat_interval = heartbeat_interval;
          options.orphan_grace = orphan_grace;
          options.max_kept_results = max_kept_results;
          options.log = [events = events](bgrpc::WorkerServiceEvent event, std::string_view job_id,
                                          std::string_view) { events->add(event, job_id); };
          return options;
        }()),
        transport(io.get_executor(), std::move(transport_options)) {
    ::grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    std::vector<std::unique_ptr<::grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
    interceptors.push_back(std::make_unique<HoldAccepted>());
    hold = static_cast<HoldAccepted*>(interceptors.back().get());
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
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
    hold->release();
    server->Shutdown(std::chrono::system_clock::now() + 2s);
    work.reset();
    io.stop();
    thread.join();
  }

  // Starts job `id`; the future holds the transport's outcome.
  // With `cancel`, the run can be cancelled through it.
  std::future<std::pair<std::error_code, core::JobResult>> run(const std::string& id,
                                                              core::ProgressCallback progress = {},
                                                              asio::cancellation_signal* cancel = nullptr) {
    auto done = std::make_shared<std::promise<std::pair<std::error_code, core::JobResult>>>();
    auto outcome = done->get_future();
    jobs.push_back(std::make_unique<core::Job>());
    jobs.back()->id = id;
    auto handler = [done](std::error_code ec, core::JobResult result) { done->set_value({ec, std::move(result)}); };
    if (cancel)
      transport.async_run(worker, *jobs.back(), std::move(progress),
                          asio::bind_cancellation_slot(cancel->slot(), std::move(handler)));
    else
      transport.async_run(worker, *jobs.back(), std::move(progress), std::move(handler));
    return outcome;
  }

  // Runs `until` with `what` on the io_context's thread (where the transport's
  // cancellation slots are served), and waits for it.
  void on_io(std::function<void()> what) {
    std::promise<void> ran;
    asio::post(io, [&] {
      what();
      ran.set_value();
    });
    ran.get_future().wait();
  }

  // Waits (yielding, with a deadline) until `condition` holds.
  static bool eventually(const std::function<bool()>& condition) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (!condition()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::yield();
    }
    return true;
  }

  // Starts job `id` and returns once its runner runs it.
  std::future<std::pair<std::error_code, core::JobResult>> run_started(const std::string& id) {
    auto started = runner.next_start();
    auto outcome = run(id);
    REQUIRE(started.wait_for(30s) == std::future_status::ready);
    return outcome;
  }

  // Job "until-go" started, its caller gone while it runs (handed over, as
  // when its orchestrator goes away), then let finish: its result is kept,
  // nobody has collected it.
  void orphan_until_go() {
    asio::cancellation_signal cancel;
    auto outcome = run("until-go", {}, &cancel);
    REQUIRE(eventually([&] { return runner.starts("until-go") == 1; }));
    on_io([&] { cancel.emit(core::run_hand_over); });
    CHECK(wait(outcome).first == asio::error::operation_aborted);
    // Orphaned before it finishes, or its result would still reach the caller's stream.
    REQUIRE(events->wait_for(bgrpc::WorkerServiceEvent::job_orphaned, "until-go"));
    runner.go();
  }

  // A plain gRPC client of the worker, for calls made by hand.
  std::unique_ptr<::blacktree::v1::Worker::Stub> stub() const {
    return ::blacktree::v1::Worker::NewStub(
        ::grpc::CreateChannel(worker.address, ::grpc::InsecureChannelCredentials()));
  }

  // A Cancel that takes job `job_id` back, as the orchestrator sends it;
  // true when the worker found the job running.
  bool take_back(const std::string& job_id, const std::string& offer_id = {}) {
    return cancel(job_id, true, offer_id);
  }

  // A Cancel of `job_id` made by hand: a take-back of `offer_id`, or (not
  // taken back) a cancel of the job itself. True when it was running.
  bool cancel(const std::string& job_id, bool taken_back = false, const std::string& offer_id = {}) {
    ::grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 30s);  // a test that fails ends
    ::blacktree::v1::CancelRequest request;
    request.set_job_id(job_id);
    request.set_taken_back(taken_back);
    request.set_offer_id(offer_id);
    ::blacktree::v1::CancelReply reply;
    REQUIRE(stub()->Cancel(&context, request, &reply).ok());
    return reply.found();
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

  std::shared_ptr<ServiceEvents> events = std::make_shared<ServiceEvents>();
  ScriptedRunner runner;
  bgrpc::WorkerService service;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  bgrpc::GrpcTransport transport;
  std::unique_ptr<::grpc::Server> server;
  HoldAccepted* hold = nullptr;  // owned by `server`
  int port = 0;
  core::WorkerInfo worker;
  std::vector<std::unique_ptr<core::Job>> jobs;  // alive until their run completes
  std::thread thread;
};

}  // namespace

TEST_CASE("GrpcTransport: a ping cancelled ends at once with operation_aborted, not at its deadline",
          "[worker_service][ping]") {
  Rig rig;
  // A port whose connections the kernel takes and nobody answers: gRPC's
  // handshake never completes, so the ping would wait for its deadline (or
  // give up connecting after about 20 s).
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  socklen_t length = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0);
  core::WorkerInfo mute = rig.worker;
  mute.id = "mute";
  mute.address = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  auto cancel = std::make_shared<asio::cancellation_signal>();
  auto done = std::make_shared<std::promise<std::error_code>>();
  auto outcome = done->get_future();
  rig.on_io([&] {
    rig.transport.async_ping(mute, 600s,
                             asio::bind_cancellation_slot(cancel->slot(), [done, cancel](std::error_code ec,
                                                                                        core::PingReply) {
                               done->set_value(ec);
                             }));
  });
  rig.on_io([&] { cancel->emit(asio::cancellation_type::terminal); });
  REQUIRE(outcome.wait_for(10s) == std::future_status::ready);
  CHECK(outcome.get() == asio::error::operation_aborted);
  ::close(fd);
}

TEST_CASE("WorkerService: jobs run on threads started once, not on a thread per job", "[worker_service]") {
  Rig rig;  // capacity 2
  for (int round = 0; round < 20; ++round) {
    auto a = rig.run("job-a-" + std::to_string(round));
    auto b = rig.run("job-b-" + std::to_string(round));
    CHECK(Rig::wait(a).second.success);
    CHECK(Rig::wait(b).second.success);
  }
  // 40 jobs on at most capacity + 1 threads (one may still be tidying up
  // after a job whose slot is free again).
  CHECK(rig.runner.threads() >= 1);
  CHECK(rig.runner.threads() <= 3);
}

TEST_CASE("WorkerService: an immediate runner's job runs on gRPC's thread, any other on a job thread",
          "[worker_service]") {
  Rig rig;
  auto pooled = rig.run("fine");
  CHECK(Rig::wait(pooled).second.success);
  CHECK(rig.runner.thread_name("fine") == "blacktree-job");
  rig.runner.set_immediate(true);  // asked per job
  auto inline_run = rig.run("at-once");
  auto [ec, result] = Rig::wait(inline_run);
  CHECK_FALSE(ec);
  CHECK(result.success);
  CHECK(result.job_id == "at-once");
  CHECK_FALSE(rig.runner.thread_name("at-once").empty());
  CHECK(rig.runner.thread_name("at-once") != "blacktree-job");
  CHECK(rig.service.running() == 0);
}

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

TEST_CASE("WorkerService: a job's result goes out before the runner's after_result, which follows it",
          "[worker_service]") {
  Rig rig;
  auto outcome = rig.run("slow-cleanup");
  auto [ec, result] = Rig::wait(outcome);
  CHECK_FALSE(ec);
  CHECK(result.success);
  rig.runner.delivered();
  CHECK(rig.runner.cleaned_after_delivery(30s));
}

// "Accepted" is the caller's proof that the job may run here: a caller that
// never read it offers the job elsewhere. So no job starts before that word is
// written to its caller, and none whose caller is gone by then.
TEST_CASE("WorkerService: a job starts only once its caller was sent that it took it", "[worker_service]") {
  Rig rig;
  rig.hold->arm();
  auto started = rig.runner.next_start();
  auto outcome = rig.run("fine");
  REQUIRE(rig.hold->wait_held());
  // A bounded wait for what must not happen.
  CHECK(started.wait_for(500ms) == std::future_status::timeout);
  CHECK(rig.runner.starts("fine") == 0);
  rig.hold->release();
  CHECK(started.wait_for(30s) == std::future_status::ready);
  auto [ec, result] = Rig::wait(outcome);
  CHECK_FALSE(ec);
  CHECK(result.success);
  CHECK(rig.runner.starts("fine") == 1);
}

TEST_CASE("WorkerService: a job whose caller left before it was told the job was taken never runs",
          "[worker_service]") {
  Rig rig;
  rig.hold->arm();
  asio::cancellation_signal cancel;
  auto outcome = rig.run("left-early", {}, &cancel);
  REQUIRE(rig.hold->wait_held());
  REQUIRE(rig.service.running() == 1);  // its slot is taken meanwhile
  rig.on_io([&] { cancel.emit(asio::cancellation_type::terminal); });
  CHECK(Rig::wait(outcome).first == asio::error::operation_aborted);
  // The service has seen its caller go; until then the held write could
  // still reach the socket ahead of the caller's reset.
  REQUIRE(Rig::eventually([&] { return rig.service.callers("left-early") == 0; }));
  rig.hold->release();  // its write fails: nobody is there to read it
  REQUIRE(Rig::eventually([&] { return rig.service.running() == 0; }));
  CHECK(rig.runner.starts("left-early") == 0);
  CHECK(rig.service.carried_jobs().finished.empty());
  CHECK(rig.service.carried_jobs().running.empty());
  // The slot is free, and the same job offered anew runs.
  auto again = rig.run("left-early");
  auto [ec, result] = Rig::wait(again);
  CHECK_FALSE(ec);
  CHECK(result.success);
  CHECK(rig.runner.starts("left-early") == 1);
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

namespace {

// A real OrchestratorService on a free loopback port, and a Registrar that
// registers `rig`'s worker with it. Configure `orchestrator`, then start().
struct Orchestrated {
  explicit Orchestrated(Rig& r)
      : rig(r), pool(r.io.get_executor()), orchestrator(pool, {"orchestrator-1", "", 1000ms, 500ms}) {}
  ~Orchestrated() {
    if (server) server->Shutdown(std::chrono::system_clock::now() + 2s);
  }

  void start() {
    ::grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&orchestrator);
    server = builder.BuildAndStart();
    REQUIRE(server);
    bgrpc::RegistrarOptions options;
    options.orchestrator_addresses = {"127.0.0.1:" + std::to_string(port)};
    options.self = rig.worker;
    registrar = std::make_unique<bgrpc::Registrar>(
        options, [&](const std::string&) { std::call_once(once, [&] { registered.set_value(); }); },
        bgrpc::Registrar::LogFn{});
    registrar->start();
    REQUIRE(registered.get_future().wait_for(30s) == std::future_status::ready);
    REQUIRE(pool.find(rig.worker.id));
  }

  Rig& rig;
  core::WorkerPool pool;
  bgrpc::OrchestratorService orchestrator;
  std::unique_ptr<::grpc::Server> server;
  std::promise<void> registered;  // told by the registrar, so they outlive it
  std::once_flag once;
  std::unique_ptr<bgrpc::Registrar> registrar;
};

}  // namespace

TEST_CASE("WorkerService: shutdown deregisters through the registrar", "[worker_service]") {
  Rig rig("leaving");
  Orchestrated orchestrated(rig);
  orchestrated.start();
  const auto outcome = rig.service.shutdown(orchestrated.registrar.get());
  CHECK(outcome.has_value());
  CHECK_FALSE(orchestrated.pool.find("leaving"));
}

TEST_CASE("WorkerService: a RunJob for a job it already runs attaches to the run", "[worker_service]") {
  Rig rig;
  auto first = rig.run_started("until-go");
  std::promise<core::Phase> first_phase;
  auto second_phase = first_phase.get_future();
  auto second = rig.run("until-go", [&first_phase, once = std::make_shared<std::once_flag>()](
                                        const core::ProgressEvent& event) {
    std::call_once(*once, [&] { first_phase.set_value(event.phase); });
  });
  // Attached: the second caller is accepted and waits for the same run.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (rig.service.callers("until-go") < 2) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::yield();
  }
  CHECK(second.wait_for(200ms) == std::future_status::timeout);  // not refused
  // Accepted, and the dispatcher hears so first.
  REQUIRE(second_phase.wait_for(30s) == std::future_status::ready);
  CHECK(second_phase.get() == core::Phase::accepted);
  rig.runner.go();
  auto [ec1, r1] = Rig::wait(first);
  auto [ec2, r2] = Rig::wait(second);
  CHECK_FALSE(ec1);
  CHECK_FALSE(ec2);
  CHECK(r1.success);
  CHECK(r2.success);
  CHECK(r2.job_id == "until-go");
  CHECK(rig.runner.starts("until-go") == 1);
}

namespace {

// A worker that misbehaves in the protocol, on a real gRPC server: it accepts
// a job (announcing heartbeats it will never send) or never accepts it, then
// stays silent until the caller cancels; or it ends the call UNAVAILABLE before
// accepting, as a connection lost then looks to the caller. The offer ids of
// RunJob calls and Cancel calls (job id, taken back, offer id) are recorded.
class SilentWorker final : public ::blacktree::v1::Worker::CallbackService {
 public:
  enum class Mode { accept, never_accept, unavailable };
  explicit SilentWorker(Mode mode) : mode_(mode) {
    ::grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", ::grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
    REQUIRE(server_);
  }
  ~SilentWorker() override { server_->Shutdown(std::chrono::system_clock::now() + 2s); }

  core::WorkerInfo info() const {
    core::WorkerInfo worker;
    worker.id = "silent";
    worker.address = "127.0.0.1:" + std::to_string(port_);
    worker.capacity = 1;
    return worker;
  }

  ::grpc::ServerWriteReactor<::blacktree::v1::RunJobReply>* RunJob(
      ::grpc::CallbackServerContext*, const ::blacktree::v1::RunJobRequest* request) override {
    {
      std::lock_guard lock(mutex_);
      offers_.push_back(request->offer_id());
    }
    class Reactor final : public ::grpc::ServerWriteReactor<::blacktree::v1::RunJobReply> {
     public:
      explicit Reactor(Mode mode) {
        if (mode == Mode::unavailable) Finish(::grpc::Status(::grpc::StatusCode::UNAVAILABLE, "connection lost"));
        if (mode != Mode::accept) return;
        accepted_.mutable_accepted()->set_worker_id("silent");
        accepted_.mutable_accepted()->set_heartbeat_interval_ms(50);
        StartWrite(&accepted_);
      }
      void OnWriteDone(bool) override {}
      void OnCancel() override { Finish(::grpc::Status::CANCELLED); }
      void OnDone() override { delete this; }

     private:
      ::blacktree::v1::RunJobReply accepted_;
    };
    return new Reactor(mode_);
  }

  ::grpc::ServerUnaryReactor* Cancel(::grpc::CallbackServerContext* context,
                                     const ::blacktree::v1::CancelRequest* request,
                                     ::blacktree::v1::CancelReply* reply) override {
    {
      std::lock_guard lock(mutex_);
      cancelled_.emplace_back(request->job_id(), request->taken_back());
      if (request->taken_back()) taken_back_offers_.push_back(request->offer_id());
      cv_.notify_all();
    }
    reply->set_found(true);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(::grpc::Status::OK);
    return reactor;
  }

  /// The offer ids of the RunJob calls, and of the take-backs, in order.
  std::vector<std::string> offers() const {
    std::lock_guard lock(mutex_);
    return offers_;
  }
  std::vector<std::string> taken_back_offers() const {
    std::lock_guard lock(mutex_);
    return taken_back_offers_;
  }

  /// Whether a Cancel of `job_id` came (within 30 s), taking it back.
  bool wait_cancelled(const std::string& job_id) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, 30s, [&] {
      return std::find(cancelled_.begin(), cancelled_.end(), std::pair(job_id, true)) != cancelled_.end();
    });
  }

 private:
  Mode mode_;
  int port_ = 0;
  std::unique_ptr<::grpc::Server> server_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::pair<std::string, bool>> cancelled_;
  std::vector<std::string> offers_;
  std::vector<std::string> taken_back_offers_;

};

struct TransportRig {
  // `tune` adjusts the test's transport options.
  explicit TransportRig(const std::function<void(bgrpc::TransportOptions&)>& tune)
      : transport(io.get_executor(), [&] {
          auto options = test_transport_options();
          tune(options);
          return options;
        }()) {
    thread = std::thread([this] { io.run(); });
  }
  ~TransportRig() {
    work.reset();
    io.stop();
    thread.join();
  }
  std::pair<std::error_code, core::JobResult> run(const core::WorkerInfo& worker, const std::string& id) {
    std::promise<std::pair<std::error_code, core::JobResult>> done;
    auto outcome = done.get_future();
    core::Job job;
    job.id = id;
    transport.async_run(worker, job, {}, [&done](std::error_code ec, core::JobResult result) {
      done.set_value({ec, std::move(result)});
    });
    REQUIRE(outcome.wait_for(30s) == std::future_status::ready);
    return outcome.get();
  }

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work = asio::make_work_guard(io);
  bgrpc::GrpcTransport transport;
  std::thread thread;
};

}  // namespace

TEST_CASE("GrpcTransport: a stream without heartbeats is lost and the job cancelled on the worker",
          "[worker_service]") {
  SilentWorker silent(SilentWorker::Mode::accept);
  TransportRig rig([](auto& options) { options.heartbeat_timeout = 300ms; });
  auto [ec, result] = rig.run(silent.info(), "hung");
  CHECK(ec == core::errc::worker_lost);
  CHECK_THAT(result.error, Catch::Contains("heartbeat"));
  CHECK(silent.wait_cancelled("hung"));
}

TEST_CASE("GrpcTransport: a worker slow to accept refused the offer and is not unreachable", "[worker_service]") {
  SilentWorker silent(SilentWorker::Mode::never_accept);
  TransportRig rig([](auto& options) { options.accept_timeout = 200ms; });
  auto [ec, result] = rig.run(silent.info(), "offered");
  CHECK(ec == core::errc::worker_refused);
  CHECK_THAT(result.error, Catch::Contains("did not accept the job within 200 ms"));
  CHECK(silent.wait_cancelled("offered"));  // it goes elsewhere: taken back

  // Offered again: offer ids are "<orchestrator id>-<n>", n growing (the
  // worker's take-back rule compares them, blacktree.proto), and a take-back
  // names the offer it takes back.
  CHECK(rig.run(silent.info(), "offered").first == core::errc::worker_refused);
  REQUIRE(Rig::eventually([&] { return silent.taken_back_offers().size() == 2; }));
  const auto offers = silent.offers();
  REQUIRE(offers.size() == 2);
  CHECK(silent.taken_back_offers() == offers);
  std::array<std::uint64_t, 2> n{};
  for (std::size_t i = 0; i < 2; ++i) {
    CAPTURE(offers[i]);
    REQUIRE(offers[i].starts_with("orchestrator-1-"));
    n[i] = std::stoull(offers[i].substr(std::string_view("orchestrator-1-").size()));
  }
  CHECK(n[1] > n[0]);
}

TEST_CASE("GrpcTransport: an accepted that crosses the accept timeout's take-back leaves the offer taken back",
          "[worker_service]") {
  namespace d = blacktree::grpc::detail;
  // The transport's watch took the offer back (on_accept_timeout: the stream
  // cancelled, the worker told to drop the job), and an accepted message
  // gRPC had read already reached the call after that. The offer stays taken
  // back and the job goes elsewhere, as when the dispatcher's own accept
  // deadline takes it back; it is not a worker lost mid-run, whose job would
  // get a failure status and never run. (The race itself, the watch's thread
  // against gRPC's, cannot be ordered from a test: hence the pure function.)
  d::RunSeen crossed;
  crossed.accept_timed_out = true;
  crossed.accepted = true;  // the stream then ends CANCELLED: no result, status not OK
  CHECK(d::run_end(crossed) == d::RunEnd::taken_back);

  // The rules around it stay as they were.
  d::RunSeen seen;
  seen.accept_timed_out = true;
  CHECK(d::run_end(seen) == d::RunEnd::taken_back);
  seen.cancelled = true;  // the dispatcher let go as well
  CHECK(d::run_end(seen) == d::RunEnd::let_go);
  d::RunSeen finished = crossed;
  finished.has_result = true;
  finished.status_ok = true;  // the result and the worker's OK came before the cancel took effect
  CHECK(d::run_end(finished) == d::RunEnd::result);
  d::RunSeen refused;
  refused.refusal = true;
  CHECK(d::run_end(refused) == d::RunEnd::refused);
  CHECK(d::run_end(d::RunSeen{}) == d::RunEnd::unreachable);
  d::RunSeen running;
  running.accepted = true;
  CHECK(d::run_end(running) == d::RunEnd::broke);
  running.silent_for = std::chrono::milliseconds(300);
  CHECK(d::run_end(running) == d::RunEnd::silent);
  running.has_result = true;  // a result whose stream then failed is not taken
  CHECK(d::run_end(running) == d::RunEnd::silent);
}

TEST_CASE("GrpcTransport: a RunJob broken before accepted goes elsewhere, and the worker is told to drop it",
          "[worker_service]") {
  SilentWorker silent(SilentWorker::Mode::unavailable);
  TransportRig rig([](auto&) {});
  auto [ec, result] = rig.run(silent.info(), "broken");
  CHECK(ec == core::errc::worker_unreachable);
  CHECK_THAT(result.error, Catch::Contains("connection lost"));
  // Had the worker taken it, the accepted message lost with the connection,
  // it must not run there too.
  CHECK(silent.wait_cancelled("broken"));
}

TEST_CASE("WorkerService: heartbeats keep a quiet job's stream alive", "[worker_service]") {
  auto options = test_transport_options();
  options.heartbeat_timeout = 300ms;
  Rig rig("w1", options, 50ms);
  auto job = rig.run_started("until-go");
  // Quiet for longer than the heartbeat timeout: heartbeats must carry it.
  CHECK(job.wait_for(1s) == std::future_status::timeout);
  rig.runner.go();
  auto [ec, result] = Rig::wait(job);
  CHECK_FALSE(ec);
  CHECK(result.success);
}

TEST_CASE("WorkerService: a leaving worker's last result is taken before its leases are voided", "[worker_service]") {
  Rig rig("leaving");
  Orchestrated orchestrated(rig);
  auto& pool = orchestrated.pool;
  orchestrated.orchestrator.settle_runs_before_deregister([&rig](const std::string& id, std::function<void()> then) {
    rig.transport.when_runs_ended(id, 2500ms, std::move(then));
  });
  orchestrated.start();

  // What a dispatcher sees, in its order: results and pool events on one executor.
  std::mutex mutex;
  std::vector<std::string> seen;
  std::promise<void> left;
  auto left_future = left.get_future().share();
  auto subscription = pool.subscribe([&](const core::WorkerEvent& event) {
    if (!event.removed) return;
    left.set_value();
    asio::post(rig.io, [&] {
      std::lock_guard lock(mutex);
      seen.push_back("removed");
    });
  });
  std::promise<void> done;
  core::Job job;
  job.id = "until-go";
  auto started = rig.runner.next_start();
  // The orchestrator reads the stream's last messages late (a busy machine):
  // what follows `accepted`, not before the worker has left or 2 s passed.
  rig.transport.async_run(
      rig.worker, job,
      [left_future](const core::ProgressEvent& event) {
        if (event.phase == core::Phase::accepted) (void)left_future.wait_for(2s);
      },
      [&](std::error_code ec, core::JobResult result) {
        CHECK_FALSE(ec);
        CHECK(result.success);
        std::lock_guard lock(mutex);
        seen.push_back("result");
        done.set_value();
      });
  REQUIRE(started.wait_for(30s) == std::future_status::ready);
  auto stopped = std::async(std::launch::async, [&] { return rig.service.shutdown(orchestrated.registrar.get()); });
  rig.runner.go();
  REQUIRE(stopped.wait_for(30s) == std::future_status::ready);
  REQUIRE(done.get_future().wait_for(30s) == std::future_status::ready);
  CHECK_FALSE(pool.find("leaving"));
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    {
      std::lock_guard lock(mutex);
      if (seen.size() == 2) break;
    }
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::yield();
  }
  CHECK(seen == std::vector<std::string>{"result", "removed"});
}

// ---------------------------------------------------------------------------
// Builds outlive their orchestrator (issue 13)

TEST_CASE("WorkerService: a job whose caller let go runs on, and a later caller gets its one result",
          "[worker_service][orphan]") {
  Rig rig;
  asio::cancellation_signal cancel;
  auto first = rig.run("until-go", {}, &cancel);
  REQUIRE(Rig::eventually([&] { return rig.runner.starts("until-go") == 1 && rig.service.callers("until-go") == 1; }));
  rig.on_io([&] { cancel.emit(core::run_hand_over); });  // the orchestrator goes away
  auto [ec1, r1] = Rig::wait(first);
  CHECK(ec1 == asio::error::operation_aborted);
  REQUIRE(rig.events->wait_for(bgrpc::WorkerServiceEvent::job_orphaned, "until-go"));
  CHECK(rig.service.running() == 1);  // not stopped
  CHECK(rig.service.carried_jobs().running == std::vector<std::string>{"until-go"});

  rig.runner.go();  // it finishes with nobody listening: its result is kept
  REQUIRE(Rig::eventually([&] { return rig.service.carried_jobs().finished == std::vector<std::string>{"until-go"}; }));
  CHECK(rig.service.running() == 0);
  auto second = rig.run("until-go");  // the next orchestrator's delivery of it
  auto [ec2, r2] = Rig::wait(second);
  CHECK_FALSE(ec2);
  CHECK(r2.success);
  CHECK(rig.runner.starts("until-go") == 1);
  CHECK(rig.events->wait_for(bgrpc::WorkerServiceEvent::job_attached, "until-go"));
}

TEST_CASE("WorkerService: a result still uncollected when a shutdown's drain ends is said dropped",
          "[worker_service][orphan]") {
  Rig rig;
  rig.orphan_until_go();
  REQUIRE(Rig::eventually([&] { return rig.service.carried_jobs().finished == std::vector<std::string>{"until-go"}; }));
  // Nobody comes for it before the drain deadline: the worker says so as it stops.
  CHECK(rig.shutdown(200ms, 1s).has_value());
  CHECK(rig.events->wait_for(bgrpc::WorkerServiceEvent::result_dropped, "until-go"));
}

namespace {

// One RunJob call made by hand, read up to its accepted message.
struct Offer {
  ::grpc::ClientContext context;
  std::unique_ptr<::grpc::ClientReader<::blacktree::v1::RunJobReply>> reader;
  ::blacktree::v1::RunJobReply first;

  Offer(::blacktree::v1::Worker::Stub& stub, const std::string& job_id, const std::string& offer_id) {
    ::blacktree::v1::RunJobRequest request;
    request.mutable_job()->set_job_id(job_id);
    request.set_offer_id(offer_id);
    context.set_deadline(std::chrono::system_clock::now() + 30s);  // a test that fails ends
    reader = stub.RunJob(&context, request);
    REQUIRE(reader->Read(&first));
    REQUIRE(first.has_accepted());
  }

  // Reads to the end: true when the stream carried a result and ended OK.
  bool got_result() {
    ::blacktree::v1::RunJobReply reply;
    bool result = false;
    while (reader->Read(&reply)) result = result || reply.has_result();
    return reader->Finish().ok() && result;
  }
};

// A RunJob call of `job_id` under `offer_id`, read to its end: how it ended.
::grpc::Status offer_to_end(::blacktree::v1::Worker::Stub& stub, const std::string& job_id, const std::string& offer_id) {
  ::grpc::ClientContext context;
  ::blacktree::v1::RunJobRequest request;
  request.mutable_job()->set_job_id(job_id);
  request.set_offer_id(offer_id);
  context.set_deadline(std::chrono::system_clock::now() + 30s);
  auto reader = stub.RunJob(&context, request);
  ::blacktree::v1::RunJobReply reply;
  while (reader->Read(&reply)) {
  }
  return reader->Finish();
}

}  // namespace

TEST_CASE("WorkerService: a caller that takes its job back stops it, and a RunJob that crossed its Cancel is refused",
          "[worker_service][orphan]") {
  Rig rig;
  asio::cancellation_signal cancel;
  auto run = rig.run("until-cancelled", {}, &cancel);
  REQUIRE(Rig::eventually([&] { return rig.runner.starts("until-cancelled") == 1; }));
  // Terminal: the orchestrator takes it back (to run it elsewhere or fail
  // it), so the worker is told to stop it, and keeps nothing of it.
  rig.on_io([&] { cancel.emit(asio::cancellation_type::terminal); });
  CHECK(Rig::wait(run).first == asio::error::operation_aborted);
  REQUIRE(Rig::eventually([&] { return rig.service.running() == 0; }));
  CHECK(rig.service.carried_jobs().finished.empty());

  // A Cancel that overtook its RunJob: that offer is refused, never run; a
  // later offer of the same job (another offer id) is taken.
  CHECK_FALSE(rig.take_back("crossed", "offer-1"));
  auto stub = rig.stub();
  const auto refused = offer_to_end(*stub, "crossed", "offer-1");
  CHECK(refused.error_code() == ::grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(refused.error_message().find("taken back") != std::string::npos);
  CHECK(rig.runner.starts("crossed") == 0);
  CHECK(offer_to_end(*stub, "crossed", "offer-2").ok());
  CHECK(rig.runner.starts("crossed") == 1);
}

TEST_CASE("WorkerService: the take-back of an offer leaves a run that a later offer of its orchestrator attached to",
          "[worker_service]") {
  // Offer 1's accepted crossed its take-back: the orchestrator let go of the
  // stream and offered the job again to this worker (offer 2), which attached
  // to the run before offer 1's take-back arrived. The run is what that
  // orchestrator wants now: the take-back must not stop it. Offer ids are
  // "<orchestrator id>-<n>", n growing with each offer (blacktree.proto).
  Rig rig;
  auto stub = rig.stub();
  Offer first(*stub, "until-cancelled", "orch-a-1");
  REQUIRE(Rig::eventually([&] { return rig.runner.starts("until-cancelled") == 1; }));
  Offer second(*stub, "until-cancelled", "orch-a-2");
  CHECK(second.first.accepted().attached());

  first.context.TryCancel();
  CHECK(rig.take_back("until-cancelled", "orch-a-1"));  // found, running
  // It runs on: a third offer attaches to it, and nothing started it again.
  Offer third(*stub, "until-cancelled", "orch-a-3");
  CHECK(third.first.accepted().attached());
  CHECK(rig.runner.starts("until-cancelled") == 1);
  // The taken-back offer itself, should its RunJob come again, is refused.
  const auto refused = offer_to_end(*stub, "until-cancelled", "orch-a-1");
  CHECK(refused.error_code() == ::grpc::StatusCode::FAILED_PRECONDITION);
  CHECK(refused.error_message().find("taken back") != std::string::npos);

  // A cancel of the job (not a take-back) stops it for every offer attached.
  CHECK(rig.cancel("until-cancelled"));
  CHECK(second.got_result());
  CHECK(third.got_result());
  first.reader->Finish();  // cancelled by its client
  CHECK(rig.runner.starts("until-cancelled") == 1);
}

TEST_CASE("WorkerService: the late take-back of an offer leaves the kept result of a later offer of its orchestrator",
          "[worker_service][orphan]") {
  // As with a run: offer 2 attached to offer 1's run, both callers went away
  // (handed over), the run finished and its result is kept for offer 2's
  // orchestrator. Offer 1's take-back, arriving only now, must not drop it.
  Rig rig;
  auto stub = rig.stub();
  Offer first(*stub, "until-go", "orch-a-1");
  REQUIRE(Rig::eventually([&] { return rig.runner.starts("until-go") == 1; }));
  Offer second(*stub, "until-go", "orch-a-2");
  CHECK(second.first.accepted().attached());
  first.context.TryCancel();
  second.context.TryCancel();
  REQUIRE(rig.events->wait_for(bgrpc::WorkerServiceEvent::job_orphaned, "until-go"));
  rig.runner.go();
  REQUIRE(Rig::eventually([&] { return rig.service.carried_jobs().finished == std::vector<std::string>{"until-go"}; }));

  CHECK_FALSE(rig.take_back("until-go", "orch-a-1"));  // finished: not running
  CHECK(rig.service.carried_jobs().finished == std::vector<std::string>{"until-go"});
  // The take-back of the offer it is kept for drops it.
  CHECK_FALSE(rig.take_back("until-go", "orch-a-2"));
  CHECK(rig.service.carried_jobs().finished.empty());
  first.reader->Finish();
  second.reader->Finish();
}

TEST_CASE("WorkerService: the take-back of an offer stops a run attached to by another orchestrator or an older offer",
          "[worker_service]") {
  // Another orchestrator's offer attached: the one taking its offer back is
  // alive and offers the job elsewhere, so the run here must stop, or the
  // job would run twice at once. Likewise when only an older offer of the
  // same orchestrator is attached: that orchestrator gave it up before. And
  // when the offers name no orchestrator: nothing says they are one's.
  Rig rig;
  auto stub = rig.stub();
  const auto [taken_offer, attached_offer] = GENERATE(table<std::string, std::string>(
      {{"orch-a-5", "orch-b-9"}, {"orch-a-5", "orch-a-3"}, {"-5", "-9"}}));
  CAPTURE(taken_offer, attached_offer);
  Offer taken(*stub, "until-cancelled", taken_offer);
  REQUIRE(Rig::eventually([&] { return rig.runner.starts("until-cancelled") == 1; }));
  Offer attached(*stub, "until-cancelled", attached_offer);
  CHECK(attached.first.accepted().attached());

  taken.context.TryCancel();
  CHECK(rig.take_back("until-cancelled", taken_offer));
  CHECK(attached.got_result());  // the run ended: its result went to the caller still there
  REQUIRE(Rig::eventually([&] { return rig.service.running() == 0; }));
  CHECK(rig.service.carried_jobs().finished.empty());  // nothing of a taken-back run is kept
  taken.reader->Finish();
  CHECK(rig.runner.starts("until-cancelled") == 1);
}

TEST_CASE("WorkerService: past max_kept_results the oldest kept result goes, said only when uncollected",
          "[worker_service][orphan]") {
  Rig rig("w1", test_transport_options(), 5s, 600s, 3);
  using Ids = std::vector<std::string>;
  auto finish = [&](const std::string& id) {
    auto outcome = rig.run(id);
    auto [ec, result] = Rig::wait(outcome);
    REQUIRE_FALSE(ec);
    REQUIRE(result.success);
  };
  for (const char* id : {"a", "b", "c", "d"}) finish(id);  // each collected by its caller
  CHECK(rig.service.carried_jobs().finished == Ids{"b", "c", "d"});  // "a", the oldest, went

  // One nobody collects: its orchestrator left before it finished.
  rig.orphan_until_go();
  REQUIRE(Rig::eventually([&] { return rig.service.carried_jobs().finished == Ids{"c", "d", "until-go"}; }));

  // A kept result taken back ("c") leaves room: nothing goes for the next one.
  CHECK_FALSE(rig.take_back("c"));  // finished: not running
  CHECK(rig.service.carried_jobs().finished == Ids{"d", "until-go"});
  finish("e");
  CHECK(rig.service.carried_jobs().finished == Ids{"d", "e", "until-go"});
  finish("f");  // "d" goes, collected: nothing said
  CHECK(rig.service.carried_jobs().finished == Ids{"e", "f", "until-go"});
  finish("g");  // "until-go" goes uncollected: said
  CHECK(rig.service.carried_jobs().finished == Ids{"e", "f", "g"});
  CHECK(rig.events->wait_for(bgrpc::WorkerServiceEvent::result_dropped, "until-go"));
  CHECK(rig.events->count(bgrpc::WorkerServiceEvent::result_dropped) == 1);
}

TEST_CASE("WorkerService: a job nobody comes back for is stopped when its orphan grace ends",
          "[worker_service][orphan]") {
  Rig rig("w1", test_transport_options(), 5s, 200ms);
  asio::cancellation_signal cancel;
  auto run = rig.run("until-cancelled", {}, &cancel);
  REQUIRE(Rig::eventually([&] { return rig.runner.starts("until-cancelled") == 1; }));
  rig.on_io([&] { cancel.emit(core::run_hand_over); });
  CHECK(Rig::wait(run).first == asio::error::operation_aborted);
  REQUIRE(rig.events->wait_for(bgrpc::WorkerServiceEvent::orphan_stopped, "until-cancelled"));
  REQUIRE(Rig::eventually([&] { return rig.service.running() == 0; }));
  CHECK(rig.service.carried_jobs().finished.empty());  // nobody wanted it: nothing kept

  // A result nobody collects is dropped when the grace ends, and said so.
  rig.orphan_until_go();
  REQUIRE(rig.events->wait_for(bgrpc::WorkerServiceEvent::result_dropped, "until-go"));
  CHECK(rig.service.carried_jobs().finished.empty());
}
