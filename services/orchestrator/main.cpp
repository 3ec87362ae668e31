// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree-orchestrator: takes jobs from a queue, hands each to a free
// registered worker over gRPC, publishes every job's final status.
// Configuration, wiring and signal handling only: the logic is blacktree::core
// (WorkerPool, HealthMonitor, Dispatcher) with the gRPC transport plugged in.

#include "../common/service.hpp"
#include "../common/ops_server.hpp"

#include <blacktree/amqp/event_publisher.hpp>
#include <blacktree/amqp/job_source.hpp>
#include <blacktree/amqp/metrics.hpp>
#include <blacktree/amqp/peers.hpp>
#include <blacktree/amqp/status_sink.hpp>
#include <blacktree/core.hpp>
#include <blacktree/core/prometheus.hpp>
#include <blacktree/grpc/credentials.hpp>
#include <blacktree/grpc/orchestrator_service.hpp>
#include <blacktree/grpc/transport.hpp>
#include <blacktree/version.hpp>
#include <blacktree/wire/line_feeder.hpp>
#include <blacktree/wire/line_status_sink.hpp>
#include <blacktree/wire/wire.hpp>

#include "cancels.hpp"
#include "dashboard.hpp"
#include "queue_depth.hpp"

#include <asio/executor_work_guard.hpp>
#include <fmt/format.h>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <csignal>
#include <future>
#include <optional>
#include <mutex>

#include <unistd.h>

namespace {

namespace core = blacktree::core;
namespace level = spdlog::level;
using Logger = std::shared_ptr<spdlog::logger>;
using blacktree::service::CancelGate;
using blacktree::service::CancelReader;
using blacktree::service::log_event;

std::string_view outcome_of(const core::JobResult& result) {
  return result.success ? "succeeded" : result.cancelled ? "cancelled" : "failed";
}

// Every job assignment and outcome, logged with ids (never tokens: Job's
// token is a core::Secret and is never formatted), counted for /metrics and,
// with the queue's event publisher, published as progress events.
struct DispatchObserver : core::PrometheusObserver {
  static constexpr bool wants_progress = true;
  using EventFn = std::function<void(const core::ProgressEvent&, const core::JobResult*)>;

  spdlog::logger* log = nullptr;
  const EventFn* events = nullptr;  // may point at an empty function
  core::JobBoardObserver board;

  void on_progress(const core::ProgressEvent& event) {
    board.on_progress(event);
    if (*events) (*events)(event, nullptr);
  }
  void on_received(const core::Job& job) {
    board.on_received(job);
    log_event(*log, level::debug,
              {.event = "job.received", .job_id = job.id, .phase = "waiting",
               .reason = job.redelivered ? "redelivered" : ""},
              "job {} received{}", job.id, job.redelivered ? " (redelivered)" : "");
  }
  void on_assigned(const core::Job& job, const core::WorkerInfo& worker) {
    board.on_assigned(job, worker);
    // One info line per job (job.finished); the rest at debug (issue 15).
    log_event(*log, level::debug,
              {.event = "job.assigned", .job_id = job.id, .worker_id = worker.id, .phase = "running"},
              "job {} assigned to worker {} at {}", job.id, worker.id, worker.address);
  }
  void on_adopted(const core::Job& job, const core::WorkerInfo& worker) {
    log_event(*log, level::info,
              {.event = "job.adopted", .job_id = job.id, .worker_id = worker.id, .phase = "running"},
              "job {} goes to worker {}, which carries its run from before: attaching, not starting it again",
              job.id, worker.id);
  }
  void on_settled_elsewhere(const core::Job& job) {
    log_event(*log, level::info, {.event = "job.settled_elsewhere", .job_id = job.id, .phase = "finished"},
              "job {} came back from the queue while another orchestrator ran it; that one published its status: "
              "acked here without running it again",
              job.id);
  }
  void on_passed_back(const core::Job& job) {
    log_event(*log, level::info, {.event = "job.passed_back", .job_id = job.id, .phase = "requeued"},
              "job {}: the worker that carries its run registered with another orchestrator; back to the queue "
              "to reach it",
              job.id);
  }
  void on_settled(const core::Job& job) {
    board.on_settled(job);
    log_event(*log, level::debug, {.event = "job.settled", .job_id = job.id, .phase = "finished"},
              "job {}: its status is confirmed and its delivery acked", job.id);
  }
  void on_not_accepted(const core::Job& job, const core::WorkerInfo& worker, std::error_code ec,
                       std::string_view detail) {
    const std::string why = ec.message();
    log_event(*log, level::warn,
              {.event = "job.not_accepted", .job_id = job.id, .worker_id = worker.id, .phase = "waiting",
               .reason = detail.empty() ? std::string_view(why) : detail},
              "job {} not accepted by worker {}: {} ({})", job.id, worker.id, detail, why);
  }
  void on_finished(const core::Job& job, const core::JobResult& result) {
    core::PrometheusObserver::on_finished(job, result);
    board.on_finished(job, result);
    if (*events) (*events)(core::ProgressEvent{job.id, result.worker_id, core::Phase::finished, {}}, &result);
    const blacktree::service::LogFields fields{.event = "job.finished", .job_id = job.id, .worker_id = result.worker_id,
                                               .phase = "finished", .outcome = outcome_of(result),
                                               .reason = result.error};
    if (result.success) {
      log_event(*log, level::info, fields, "job {} succeeded on worker {}", job.id, result.worker_id);
    } else {
      log_event(*log, level::warn, fields, "job {} failed on worker {}: {}", job.id,
                result.worker_id.empty() ? "-" : result.worker_id, result.error);
    }
  }
  void on_dead_lettered(const core::Job& job, std::string_view reason) {
    board.on_dead_lettered(job, reason);
    log_event(*log, level::warn,
              {.event = "job.dead_lettered", .job_id = job.id, .phase = "finished", .outcome = "dead_lettered",
               .reason = reason},
              "job {} dead-lettered: {}", job.id.empty() ? "(without jobId)" : job.id, reason);
  }
  void on_handed_back(const core::Job& job) {
    board.on_handed_back(job);
    log_event(*log, level::info,
              {.event = "job.handed_back", .job_id = job.id, .phase = "requeued",
               .reason = "the orchestrator is stopping"},
              "job {} handed back to the queue", job.id);
  }
  // Every held job retries every few seconds while statuses cannot go out;
  // the sink logs the cause once, and this a line a minute, not one per retry.
  void on_publish_failed(const core::Job& job, std::error_code ec) {
    const auto now = std::chrono::steady_clock::now();
    const std::string why = ec.message();
    const blacktree::service::LogFields fields{.event = "job.status_retry", .job_id = job.id, .phase = "publishing",
                                               .reason = why};
    if (now - last_publish_warning_ < std::chrono::minutes(1)) {
      ++publish_failures_unlogged_;
      log_event(*log, level::debug, fields, "job {}: status not confirmed yet ({}); retrying", job.id, why);
      return;
    }
    log_event(*log, level::warn, fields,
              "job {}: status not confirmed yet ({}); retrying ({} more such retries in the last minute)", job.id, why,
              publish_failures_unlogged_);
    last_publish_warning_ = now;
    publish_failures_unlogged_ = 0;
  }
  std::chrono::steady_clock::time_point last_publish_warning_{};
  std::uint64_t publish_failures_unlogged_ = 0;
};

// Missed pings. What they lead to (dead, alive again, forgotten) is a change
// of the worker's state in the pool, logged once by log_worker_event.
struct LogHealthObserver : core::HealthObserver {
  spdlog::logger* log = nullptr;
  void on_ping_failed(const core::WorkerInfo& worker, std::error_code ec, std::uint32_t misses) {
    const std::string why = ec.message();
    log_event(*log, level::debug, {.event = "worker.ping_failed", .worker_id = worker.id, .reason = why},
              "worker {} missed a ping ({}), {} in a row", worker.id, why, misses);
  }
};

// Every change of a worker's lifecycle state in the pool, one line each with
// its reason: free <-> busy is not one (the pool does not report it). Into
// `registering` is a registration, logged by the registration listener with
// the worker's details instead.
void log_worker_event(spdlog::logger& log, const core::WorkerEvent& event) {
  if (!event.info) return;
  const core::WorkerInfo& worker = *event.info;
  const std::string_view from = core::to_string(event.from);
  if (event.removed) {
    // A dead worker removed was forgotten (--forget-dead-after-s) or left
    // while dead; any other left (deregistered, or its last job ended after).
    const bool dead = event.from == core::WorkerState::dead;
    log_event(log, level::info,
              {.event = dead ? "worker.forgotten" : "worker.deregistered", .worker_id = worker.id, .state = "removed",
               .from = from, .reason = event.reason},
              "worker {} {}: {}", worker.id, dead ? "forgotten" : "deregistered", event.reason);
    return;
  }
  if (event.added || event.to == core::WorkerState::registering) return;
  const std::string_view to = core::to_string(event.to);
  if (event.from == event.to) {
    if (event.leases_lost) {  // a ping answered by a new incarnation
      log_event(log, level::warn,
                {.event = "worker.restarted", .worker_id = worker.id, .state = to, .from = from,
                 .reason = event.reason},
                "worker {} restarted (a new process answers its pings): the jobs it ran are lost", worker.id);
    }
    return;
  }
  const bool alive = (event.from == core::WorkerState::registering || event.from == core::WorkerState::dead) &&
                     event.to == core::WorkerState::free;
  const std::string_view name = event.to == core::WorkerState::dead ? "worker.dead"
                                : alive                             ? "worker.alive"
                                                                    : "worker.state";
  log_event(log, event.to == core::WorkerState::dead ? level::warn : level::info,
            {.event = name, .worker_id = worker.id, .state = to, .from = from, .reason = event.reason},
            "worker {} {} -> {}{}{}", worker.id, from, to, event.reason.empty() ? "" : ": ", event.reason);
}

// What the other orchestrators on the queue say (AmqpPeers, on its thread),
// handed to the dispatcher while there is one. `hold` is how long a job they
// say they run is waited for (DispatcherOptions::peer_hold; 0: no peers).
class PeerInbox {
 public:
  using Fn = std::function<void(blacktree::amqp::PeerNews)>;
  std::chrono::milliseconds hold{0};

  void open(Fn fn) {
    std::lock_guard lock(mutex_);
    fn_ = std::move(fn);
  }
  void close() {
    std::lock_guard lock(mutex_);
    fn_ = nullptr;
  }
  void operator()(blacktree::amqp::PeerNews news) {
    std::lock_guard lock(mutex_);
    if (fn_) fn_(std::move(news));  // said again next interval if nobody listens yet
  }

 private:
  std::mutex mutex_;
  Fn fn_;
};

struct Settings {
  std::string listen = "0.0.0.0:50051";
  std::string queue = "amqp";
  std::string http_listen = "0.0.0.0:9090";
  bool dashboard = true;
  std::string admin_token;  // empty: the dashboard is read-only
  std::string token;
  std::uint32_t ping_interval_ms = 1000;
  std::uint32_t ping_timeout_ms = 500;
  std::uint32_t ping_misses = 2;
  std::uint32_t max_attempts = 3;
  std::uint32_t placement_timeout_s = 300;
  std::uint32_t accept_timeout_ms = 10'000;
  std::uint32_t job_timeout_s = 1800;
  std::uint32_t run_grace_s = 60;
  std::uint32_t drain_timeout_s = 30;
  std::uint32_t carrier_wait_ms = 15'000;
  std::uint32_t forget_dead_after_s = 600;
  blacktree::service::TlsFlags tls;
  std::uint32_t max_worker_capacity = 64;
  std::uint32_t heartbeat_timeout_ms = 30'000;
};

blacktree::grpc::TlsOptions tls_options(const Settings& s) {
  return {s.tls.cert, s.tls.key, s.tls.ca, std::chrono::seconds(s.tls.reload_interval_s)};
}

blacktree::grpc::TransportOptions transport_options(const std::string& orchestrator_id, const Settings& s,
                                                    std::shared_ptr<blacktree::grpc::WorkerSecrets> secrets) {
  blacktree::grpc::TransportOptions options;
  options.orchestrator_id = orchestrator_id;
  // main() checked the files before the plane is built.
  options.credentials = *blacktree::grpc::channel_credentials(tls_options(s));
  options.worker_secrets = std::move(secrets);
  options.accept_timeout = std::chrono::milliseconds(s.accept_timeout_ms);
  options.heartbeat_timeout = std::chrono::milliseconds(s.heartbeat_timeout_ms);
  return options;
}

blacktree::grpc::OrchestratorServiceOptions service_options(const std::string& orchestrator_id, const Settings& s,
                                                            std::shared_ptr<blacktree::grpc::WorkerSecrets> secrets,
                                                            const core::JobBoard& jobs) {
  blacktree::grpc::OrchestratorServiceOptions options;
  options.jobs = &jobs;
  options.orchestrator_id = orchestrator_id;
  options.registration_token = s.token;
  options.ping_interval = std::chrono::milliseconds(s.ping_interval_ms);
  options.ping_timeout = std::chrono::milliseconds(s.ping_timeout_ms);
  options.require_worker_certificate = tls_options(s).enabled();
  options.max_worker_capacity = s.max_worker_capacity;
  options.worker_secrets = std::move(secrets);
  return options;
}

core::HealthOptions health_options(const Settings& s) {
  core::HealthOptions options;
  options.interval = std::chrono::milliseconds(s.ping_interval_ms);
  options.timeout = std::chrono::milliseconds(s.ping_timeout_ms);
  options.misses_before_dead = s.ping_misses;
  options.forget_dead_after = std::chrono::seconds(s.forget_dead_after_s);
  return options;
}

// Everything but the queue: pool, transport, health, gRPC server.
struct Plane {
  Plane(const Settings& s, Logger logger)
      : settings(s),
        log(std::move(logger)),
        id(blacktree::service::random_hex(16)),
        secrets(std::make_shared<blacktree::grpc::WorkerSecrets>()),
        work(asio::make_work_guard(io)),
        pool(io.get_executor()),
        transport(io.get_executor(), transport_options(id, s, secrets)),
        channels(transport.forget_removed_workers(pool)),
        health(io.get_executor(), transport, pool, health_options(s), LogHealthObserver{{}, log.get()}),
        service(pool, service_options(id, s, secrets, board),
                [this](const core::WorkerInfo& worker, bool registered, std::string_view detail) {
                  // A registration puts the worker in `registering`; leaving
                  // is the pool's change to log (log_worker_event), once.
                  if (!registered) return;
                  log_event(*log, level::info,
                            {.event = "worker.registered", .worker_id = worker.id, .state = "registering",
                             .reason = detail},
                            "worker {} {} at {} (capacity {}, labels {}, version {})", worker.id, detail,
                            worker.address, worker.capacity, core::to_string(worker.labels), worker.version);
                }) {
    // A leaving worker's last results are taken before its leases are voided
    // (bounded below the worker's own Deregister deadline).
    service.settle_runs_before_deregister([this](const std::string& worker_id, std::function<void()> then) {
      transport.when_runs_ended(worker_id, std::chrono::seconds(2), std::move(then));
    });
    subscription = pool.subscribe([this](const core::WorkerEvent& event) { log_worker_event(*log, event); });
  }

  bool start_server() {
    ::grpc::EnableDefaultHealthCheckService(true);
    ::grpc::ServerBuilder builder;
    builder.AddListeningPort(settings.listen, *blacktree::grpc::server_credentials(tls_options(settings)), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    if (!server || port == 0) return false;
    server->GetHealthCheckService()->SetServingStatus(true);
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
    health.start();
    return true;
  }

  void stop() {
    health.stop();
    if (server) server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    pool.stop();
    work.reset();
    io.stop();
    for (auto& t : threads) t.join();
    threads.clear();
  }

  Settings settings;
  Logger log;
  std::string id;
  std::shared_ptr<blacktree::grpc::WorkerSecrets> secrets;  // per registration, shared by service and transport
  core::PrometheusMetrics metrics;
  core::JobBoard board;  // the jobs in flight and the last finished: ListJobs, the dashboard
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  core::WorkerPool pool;
  blacktree::grpc::GrpcTransport transport;
  core::WorkerPool::Subscription channels;  // workers the pool removes lose their gRPC channel
  core::HealthMonitor<blacktree::grpc::GrpcTransport, core::WorkerPool, LogHealthObserver> health;
  blacktree::grpc::OrchestratorService service;
  core::WorkerPool::Subscription subscription;
  std::unique_ptr<::grpc::Server> server;
  int port = 0;
  std::vector<std::thread> threads;
};

// Said at start and on every /healthz while --insecure is given.
std::string insecure_notice(const Settings& s) {
  return fmt::format("warning: --insecure: gRPC runs {} and {}", tls_options(s).enabled() ? "with mutual TLS" : "without TLS",
                     s.token.empty() ? "without a registration token: anyone who reaches the port can register"
                                     : "with a registration token");
}

// The broker's counts of the execute queue, as Prometheus text (nothing
// while the broker cannot be asked), and in words for the dashboard.
std::string queue_depth_metrics(blacktree::service::QueueDepth& depth) {
  const auto reading = depth.get();
  if (!reading) return {};
  core::prometheus::TextWriter out;
  out.family("blacktree_amqp_queue_messages_ready", "gauge",
             "Jobs ready in the execute queue (the broker's count, at most 5 s old).");
  out.sample("blacktree_amqp_queue_messages_ready", {{"queue", depth.queue()}},
             std::uint64_t{reading->counts.messages});
  out.family("blacktree_amqp_queue_consumers", "gauge", "Consumers of the execute queue.");
  out.sample("blacktree_amqp_queue_consumers", {{"queue", depth.queue()}}, std::uint64_t{reading->counts.consumers});
  return std::move(out).text();
}

std::string queue_depth_text(blacktree::service::QueueDepth& depth) {
  const auto reading = depth.get();
  if (!reading) {
    const std::string why = depth.last_error();
    return "unknown (" + (why.empty() ? std::string("not asked yet") : why) + ")";
  }
  return fmt::format("{} jobs ready in {} ({} consumers)", reading->counts.messages, depth.queue(),
                     reading->counts.consumers);
}

// Runs the dispatcher on `source` and `sink` until SIGTERM/SIGINT, then
// drains: stop_intake(), let running jobs finish until the deadline, hand
// back the rest.
template <class Source, class Sink>
int dispatch_until_signal(Plane& plane, Source& source, Sink& sink, const sigset_t& signals,
                          const std::function<void()>& stop_intake, const std::function<std::string()>& queue_ready,
                          const DispatchObserver::EventFn& events, CancelGate& cancels, PeerInbox& peers,
                          const std::function<std::string()>& more_metrics = {},
                          const std::function<std::string()>& queue_depth = {}) {
  core::DispatcherOptions options;
  options.max_attempts = plane.settings.max_attempts;
  options.placement_timeout = std::chrono::seconds(plane.settings.placement_timeout_s);
  options.accept_timeout = std::chrono::milliseconds(plane.settings.accept_timeout_ms);
  options.default_job_timeout = std::chrono::seconds(plane.settings.job_timeout_s);
  options.run_timeout_grace = std::chrono::seconds(plane.settings.run_grace_s);
  options.carrier_wait = std::chrono::milliseconds(plane.settings.carrier_wait_ms);
  options.peer_hold = peers.hold;
  DispatchObserver observer;
  observer.metrics = &plane.metrics;
  observer.log = plane.log.get();
  observer.events = &events;
  observer.board.board = &plane.board;
  core::Dispatcher<Source, blacktree::grpc::GrpcTransport, Sink, core::WorkerPool, DispatchObserver> dispatcher(
      plane.io.get_executor(), source, plane.transport, sink, plane.pool, options, observer);

  blacktree::service::OpsServer ops(
      queue_ready,
      [&] {
        return plane.metrics.render(dispatcher.stats(), plane.pool.snapshot()) +
               core::render_backlog(plane.board.backlog(), std::chrono::system_clock::now()) +
               (more_metrics ? more_metrics() : std::string());
      },
      plane.settings.tls.insecure ? insecure_notice(plane.settings) : std::string());
  if (plane.settings.dashboard) {
    blacktree::service::DashboardSource dashboard;
    dashboard.board = &plane.board;
    dashboard.workers = [&plane] { return plane.pool.snapshot(); };
    dashboard.stats = [&dispatcher] { return dispatcher.stats(); };
    dashboard.cancel = [&cancels](std::string job_id, std::string reason, CancelGate::Done done) {
      return cancels.submit(std::move(job_id), std::move(reason), std::move(done));
    };
    dashboard.queue = queue_depth;
    dashboard.admin_token = plane.settings.admin_token;
    dashboard.title = fmt::format("orchestrator {} ({})", plane.id, BLACKTREE_VERSION_STRING);
    blacktree::service::add_dashboard(ops.http(), std::move(dashboard));
  }
  if (!plane.settings.http_listen.empty()) {
    const int bound = ops.start(plane.settings.http_listen);
    if (bound == 0) {
      plane.log->error("cannot serve /healthz and /metrics on {}: is the port free?", plane.settings.http_listen);
      return 1;
    }
    plane.log->info("serving /healthz and /metrics on port {}", bound);
  }
  dispatcher.start();
  // Every cancel, from the queue or the dashboard: one line with its outcome.
  cancels.open([&dispatcher, log = plane.log](std::string job_id, std::string reason, CancelGate::Done done) {
    auto logged = [log, job_id, reason, done = std::move(done)](core::CancelOutcome outcome) {
      log_event(*log, level::info,
                {.event = "job.cancel", .job_id = job_id, .outcome = blacktree::service::short_name(outcome), .reason = reason},
                "cancel of job {}: {}", job_id, core::to_string(outcome));
      if (done) done(outcome);
    };
    dispatcher.async_cancel(std::move(job_id), std::move(reason), std::move(logged));
  });

  peers.open([&dispatcher, log = plane.log](blacktree::amqp::PeerNews news) {
    log_event(*log, level::debug, {.event = "peers.heard", .reason = news.from},
              "orchestrator {} runs {} job(s) whose deliveries went back to the queue, {} settled since; its "
              "workers carry {} job(s) it has no delivery of",
              news.from, news.running.size(), news.settled.size(), news.carried.size());
    if (!news.running.empty()) dispatcher.held_elsewhere(std::move(news.running));
    if (!news.settled.empty()) dispatcher.settled_elsewhere(std::move(news.settled));
    if (!news.carried.empty()) dispatcher.carried_elsewhere(std::move(news.carried));
  });

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  const auto stats = dispatcher.stats();
  log_event(*plane.log, level::info,
            {.event = "orchestrator.draining", .reason = strsignal(signal_number)},
            "received {}: draining ({} job(s) in flight, up to {} s)", strsignal(signal_number), stats.in_flight,
            plane.settings.drain_timeout_s);
  if (stop_intake) stop_intake();
  std::promise<std::error_code> stopped;
  dispatcher.async_stop(std::chrono::seconds(plane.settings.drain_timeout_s),
                        [&stopped](std::error_code ec) { stopped.set_value(ec); });
  const auto ec = stopped.get_future().get();
  cancels.close();  // before the dispatcher goes
  peers.close();
  plane.board.close();  // live log tails end, so the HTTP server can stop
  if (ec) {
    log_event(*plane.log, level::warn, {.event = "orchestrator.drain_deadline", .reason = "drain deadline passed"},
              "drain deadline passed: unfinished jobs were handed back to the queue");
  }
  const auto final_stats = dispatcher.stats();
  log_event(*plane.log, level::info, {.event = "orchestrator.stopped"},
            "stopped: {} received, {} succeeded, {} failed, {} dead-lettered, {} handed back", final_stats.received,
            final_stats.succeeded, final_stats.failed, final_stats.dead_lettered, final_stats.handed_back);
  ops.stop();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  blacktree::service::disable_core_dumps();  // tokens and credentials live in this memory
  blacktree::service::skip_lock_order_checks();
  const sigset_t signals = blacktree::service::block_termination_signals();  // before any thread starts

  CLI::App app{"blacktree-orchestrator: dispatches build jobs from a queue to registered workers"};
  app.set_version_flag("--version", std::string(BLACKTREE_VERSION_STRING));
  blacktree::service::add_config_file_option(app);
  Settings s;
  std::string token_file;
  blacktree::service::LogOptions log_options;
  app.add_option("--listen", s.listen, "where to serve gRPC for workers and admins (host:port)")
      ->envname("ORCHESTRATOR_LISTEN")
      ->capture_default_str();
  app.add_option("--queue", s.queue,
                 "where jobs come from: amqp (RabbitMQ), or stdio (JobRequest JSON lines in, JobResponse lines out)")
      ->envname("BLACKTREE_QUEUE")
      ->check(CLI::IsMember({"amqp", "stdio"}))
      ->capture_default_str();
  app.add_option("--http-listen", s.http_listen,
                 "where to serve /healthz, /metrics and the dashboard (host:port; empty: off)")
      ->envname("BLACKTREE_HTTP_LISTEN")
      ->capture_default_str();
  app.add_flag("--dashboard,!--no-dashboard", s.dashboard,
               "serve the dashboard (workers, jobs and their output) at / on the HTTP port")
      ->envname("BLACKTREE_DASHBOARD")
      ->capture_default_str();
  std::string admin_token_file;
  app.add_option("--dashboard-admin-token-file", admin_token_file,
                 "file holding the token that lets the dashboard cancel jobs (unset: read-only)")
      ->envname("BLACKTREE_DASHBOARD_ADMIN_TOKEN_FILE");
  blacktree::amqp::AmqpOptions amqp;
  std::string amqp_password_file;
  std::uint32_t heartbeat_s = static_cast<std::uint32_t>(amqp.heartbeat.count());
  app.add_option("--mq-url", amqp.url,
                 "the broker, amqp[s]://user:password@host:port/vhost; a cluster: one URL per node, "
                 "comma-separated (tried in turn)")
      ->envname("MQ_URL")
      ->capture_default_str();
  app.add_option("--mq-password-file", amqp_password_file, "file holding the broker password (overrides the URL's)")
      ->envname("MQ_PASSWORD_FILE");
  app.add_option("--mq-tls-ca-file", amqp.tls.ca_file, "CA bundle for amqps (default: the system's)")
      ->envname("MQ_TLS_CA_FILE");
  app.add_option("--mq-tls-cert-file", amqp.tls.cert_file, "client certificate for amqps")->envname("MQ_TLS_CERT_FILE");
  app.add_option("--mq-tls-key-file", amqp.tls.key_file, "client key for amqps")->envname("MQ_TLS_KEY_FILE");
  app.add_option("--mq-heartbeat-s", heartbeat_s, "AMQP heartbeat (0: off)")
      ->envname("MQ_HEARTBEAT_S")
      ->capture_default_str();
  app.add_option("--mq-queue-type", amqp.queue_type,
                 "type the queues are declared with (jobs, statuses, cancels, dead letters): classic, or quorum "
                 "(replicated across a RabbitMQ cluster's nodes)")
      ->envname("BLACKTREE_MQ_QUEUE_TYPE")
      ->check(CLI::IsMember({"classic", "quorum"}))
      ->capture_default_str();
  app.add_option("--execute-queue", amqp.execute_queue, "queue the jobs come from")
      ->envname("BLACKTREE_EXECUTE_QUEUE")
      ->capture_default_str();
  app.add_option("--mq-peers-exchange", amqp.peers_exchange,
                 "fanout exchange on which orchestrators sharing the job queue tell each other which jobs they still "
                 "run after a lost broker connection sent their deliveries back to the queue, and which jobs their "
                 "workers carry from an orchestrator that went away (empty: off; a job redelivered to another "
                 "orchestrator may then run twice)")
      ->envname("BLACKTREE_MQ_PEERS_EXCHANGE")
      ->capture_default_str();
  app.add_option("--cancel-queue", amqp.cancel_queue,
                 "queue of cancel requests, {\"jobId\": ...} (empty: none taken)")
      ->envname("BLACKTREE_CANCEL_QUEUE")
      ->capture_default_str();
  app.add_option("--status-queue", amqp.status_queue, "queue the final statuses go to")
      ->envname("BLACKTREE_STATUS_QUEUE")
      ->capture_default_str();
  app.add_option("--status-exchange", amqp.status_exchange, "exchange statuses are published to (default: \"\")")
      ->envname("BLACKTREE_STATUS_EXCHANGE");
  app.add_option("--status-routing-key", amqp.status_routing_key, "routing key for statuses (default: the status queue)")
      ->envname("BLACKTREE_STATUS_ROUTING_KEY");
  app.add_option("--events-exchange", amqp.events_exchange, "topic exchange for progress events (job.<jobId>)")
      ->envname("BLACKTREE_EVENTS_EXCHANGE")
      ->capture_default_str();
  app.add_option("--dead-letter-exchange", amqp.dead_letter_exchange, "where invalid jobs go, with their reason")
      ->envname("BLACKTREE_DEAD_LETTER_EXCHANGE")
      ->capture_default_str();
  app.add_option("--dead-letter-queue", amqp.dead_letter_queue, "queue bound to the dead-letter exchange")
      ->envname("BLACKTREE_DEAD_LETTER_QUEUE")
      ->capture_default_str();
  app.add_option("--mq-max-message-bytes", amqp.max_message_size,
                 "a job message larger than this is dead-lettered unread")
      ->envname("BLACKTREE_MQ_MAX_MESSAGE_BYTES")
      ->check(CLI::Range(std::size_t{1024}, std::size_t{128} << 20))
      ->capture_default_str();
  app.add_option("--registration-token-file", token_file,
                 "file holding the token workers must present (env BLACKTREE_REGISTRATION_TOKEN also works)")
      ->envname("BLACKTREE_REGISTRATION_TOKEN_FILE");
  app.add_option("--ping-interval-ms", s.ping_interval_ms, "how often each worker is pinged")
      ->envname("BLACKTREE_PING_INTERVAL_MS")
      ->check(CLI::Range(50u, 600000u))
      ->capture_default_str();
  app.add_option("--ping-timeout-ms", s.ping_timeout_ms, "a ping's deadline")
      ->envname("BLACKTREE_PING_TIMEOUT_MS")
      ->check(CLI::Range(10u, 600000u))
      ->capture_default_str();
  app.add_option("--ping-misses", s.ping_misses, "missed pings in a row that make a worker dead")
      ->envname("BLACKTREE_PING_MISSES")
      ->check(CLI::Range(1u, 100u))
      ->capture_default_str();
  app.add_option("--max-attempts", s.max_attempts, "offers of a job no worker answered (unreachable, too slow to accept) before it fails; refusals "
                 "(full, draining) make it wait instead")
      ->envname("BLACKTREE_MAX_ATTEMPTS")
      ->check(CLI::Range(1u, 100u))
      ->capture_default_str();
  app.add_option("--placement-timeout-s", s.placement_timeout_s,
                 "how long a job may wait while no live worker offers its labels (0: forever)")
      ->envname("BLACKTREE_PLACEMENT_TIMEOUT_S")
      ->capture_default_str();
  app.add_option("--accept-timeout-ms", s.accept_timeout_ms,
                 "an offered job not accepted within this goes to another worker (the worker is not declared dead)")
      ->envname("BLACKTREE_ACCEPT_TIMEOUT_MS")
      ->check(CLI::Range(100u, 600000u))
      ->capture_default_str();
  app.add_option("--job-timeout-s", s.job_timeout_s,
                 "the time limit of a job that sets none, as the workers' --job-timeout-s (0: none)")
      ->envname("BLACKTREE_JOB_TIMEOUT_S")
      ->capture_default_str();
  app.add_option("--run-grace-s", s.run_grace_s,
                 "a job running longer than its time limit plus this is cancelled and reported lost")
      ->envname("BLACKTREE_RUN_GRACE_S")
      ->check(CLI::Range(1u, 86400u))
      ->capture_default_str();
  app.add_option("--drain-timeout-s", s.drain_timeout_s,
                 "on SIGTERM, how long running jobs may take to finish; then they are handed back to the queue and "
                 "go on running on their workers, for the next orchestrator to attach to")
      ->envname("BLACKTREE_DRAIN_TIMEOUT_S")
      ->capture_default_str();
  app.add_option("--carrier-wait-ms", s.carrier_wait_ms,
                 "a redelivered job waits this long for the worker that may still run it (from an orchestrator "
                 "that went away) to register, before it is placed anew (0: never waits; such a job may run twice)")
      ->envname("BLACKTREE_CARRIER_WAIT_MS")
      ->check(CLI::Range(0u, 600000u))
      ->capture_default_str();
  app.add_option("--forget-dead-after-s", s.forget_dead_after_s,
                 "deregister a worker dead for this long (0: keep dead workers listed)")
      ->envname("BLACKTREE_FORGET_DEAD_AFTER_S")
      ->capture_default_str();
  app.add_option("--max-worker-capacity", s.max_worker_capacity, "a registration offering more slots is refused")
      ->envname("BLACKTREE_MAX_WORKER_CAPACITY")
      ->check(CLI::Range(1u, 65535u))
      ->capture_default_str();
  app.add_option("--heartbeat-timeout-ms", s.heartbeat_timeout_ms,
                 "a running job's stream silent this long (no heartbeat) is reported lost and the job cancelled "
                 "on the worker (0: never)")
      ->envname("BLACKTREE_HEARTBEAT_TIMEOUT_MS")
      ->capture_default_str();
  blacktree::service::add_tls_options(app, s.tls, true);
  blacktree::service::add_log_options(app, log_options);
  CLI11_PARSE(app, argc, argv);
  try {
    s.token = blacktree::service::value_or_usage_error(blacktree::service::registration_token(token_file));
    if (!admin_token_file.empty()) {
      s.admin_token = blacktree::service::value_or_usage_error(
          blacktree::service::read_secret_file(admin_token_file, "--dashboard-admin-token-file"));
    }
    const auto tls = tls_options(s);
    if (tls.enabled()) blacktree::service::value_or_usage_error(blacktree::grpc::check_tls_files(tls));
    blacktree::service::value_or_usage_error(
        blacktree::grpc::require_authentication("orchestrator", tls.enabled(), !s.token.empty(), s.tls.insecure));
    if (!amqp_password_file.empty()) {
      amqp.password = blacktree::core::Secret(blacktree::service::value_or_usage_error(
          blacktree::service::read_secret_file(amqp_password_file, "--mq-password-file")));
    }
  } catch (const CLI::Error& e) {
    return app.exit(e);
  }
  amqp.heartbeat = std::chrono::seconds(heartbeat_s);

  auto log = blacktree::service::make_logger("orchestrator", log_options);
  amqp.log_deliveries = log->should_log(level::debug);  // each delivery's tag and each ack frame (operations.md)
  // The AMQP adapters log once per distinct error of a connection (not per
  // retry) and once when it recovers, as "amqp <connection>: <what>".
  amqp.log = [log](blacktree::amqp::LogLevel amqp_level, std::string_view message) {
    using blacktree::amqp::LogLevel;
    std::string_view connection;
    std::string_view what = message;
    if (message.starts_with("amqp ")) {
      if (const auto colon = message.find(": "); colon != std::string_view::npos) {
        connection = message.substr(5, colon - 5);
        what = message.substr(colon + 2);
      }
    }
    log_event(*log,
              amqp_level == LogLevel::error     ? level::err
              : amqp_level == LogLevel::warning ? level::warn
              : amqp_level == LogLevel::debug   ? level::debug
                                                : level::info,
              {.event = amqp_level == LogLevel::debug ? "broker.delivery" : "broker.connection",
               .connection = connection, .reason = what},
              "{}", message);
  };
  Plane plane(s, log);
  // The broker's connection list says which orchestrator each connection is.
  amqp.connection_name = "blacktree-orchestrator " + plane.id;
  if (!plane.start_server()) {
    log->error("cannot listen on {}: is the address valid and the port free?", s.listen);
    return 1;
  }
  log_event(*log, level::info, {.event = "orchestrator.started"},
            "orchestrator {} serving gRPC on port {} (queue: {}, registration token {}, {})", plane.id, plane.port,
            s.queue, s.token.empty() ? "not required" : "required",
            tls_options(s).enabled() ? "mutual TLS" : "plaintext");
  if (s.tls.insecure) log->warn("{}", insecure_notice(s));

  int rc = 0;
  if (s.queue == "stdio") {
    core::InMemoryQueue queue(plane.io.get_executor());
    blacktree::wire::LineStatusSink sink(plane.io.get_executor(), STDOUT_FILENO);
    blacktree::wire::LineFeeder feeder(STDIN_FILENO, blacktree::wire::job_request_lines(queue));
    if (auto started = feeder.start(); !started) {
      log->error("cannot read jobs from standard input: {}", started.error().message());
      plane.stop();
      return 1;
    }
    CancelGate gate;  // the dashboard's cancels; stdio has no cancel queue
    PeerInbox no_peers;  // nor other orchestrators
    rc = dispatch_until_signal(
        plane, queue, sink, signals, [&feeder] { feeder.stop(); }, [] { return std::string(); }, {}, gate,
        no_peers);
  } else {
    try {
      blacktree::amqp::AmqpJobSource source(plane.io.get_executor(), amqp);
      blacktree::amqp::AmqpStatusSink sink(plane.io.get_executor(), amqp);
      blacktree::amqp::AmqpEventPublisher events(amqp);
      log->info("jobs from {} on {}, statuses to {}, events to exchange {}", amqp.execute_queue, source.endpoint(),
                amqp.effective_status_routing_key(), amqp.events_exchange);
      const DispatchObserver::EventFn publish = [&events, &plane](const core::ProgressEvent& event,
                                                                  const core::JobResult* result) {
        const bool queued = result ? events.publish_result(event, *result) : events.publish(event);
        if (!queued) plane.metrics.count_event_dropped();
      };
      // The reasons name the broker user: AmqpOptions::log puts them in the
      // log, not on /healthz, which anyone who can reach the port reads.
      const auto ready = [&source, &sink] {
        if (!source.connected())
          return std::string("not connected to the broker (jobs); the reason is in the orchestrator's log");
        if (!sink.connected())
          return std::string("not connected to the broker (statuses); the reason is in the orchestrator's log");
        return std::string();
      };
      // What waits in the broker, for /metrics and the dashboard.
      blacktree::service::QueueDepth depth(amqp);
      // Cancel requests come on a consumer of their own.
      CancelGate gate;
      std::optional<blacktree::amqp::AmqpJobSource> cancel_source;
      if (!amqp.cancel_queue.empty()) {
        auto cancel_options = amqp;
        cancel_options.execute_queue = amqp.cancel_queue;
        cancel_options.connection_name = amqp.connection_name + " cancels";
        // Its lines say `amqp cancels: ...`, not the jobs' `amqp source: ...`.
        cancel_options.log = [forward = amqp.log](blacktree::amqp::LogLevel amqp_level, std::string_view message) {
          constexpr std::string_view role = "amqp source: ";
          if (message.starts_with(role)) {
            forward(amqp_level, "amqp cancels: " + std::string(message.substr(role.size())));
          } else {
            forward(amqp_level, message);
          }
        };
        cancel_source.emplace(plane.io.get_executor(), cancel_options);
        cancel_source->set_prefetch(32);
        std::make_shared<CancelReader>(*cancel_source, gate, log)->receive();
        log->info("cancel requests from {}", amqp.cancel_queue);
      }
      // Other orchestrators on the queue: what each still runs after its
      // deliveries went back to the queue, so that none runs it again.
      PeerInbox inbox;
      std::optional<blacktree::amqp::AmqpPeers> peers;
      if (!amqp.peers_exchange.empty()) {
        inbox.hold = 5 * amqp.peers_interval;
        peers.emplace(
            amqp, plane.id,
            [&source, &plane] {
              auto lost = source.lost_deliveries(std::chrono::seconds(30));
              return blacktree::amqp::PeerNews{{}, std::move(lost.running), std::move(lost.settled),
                                               plane.pool.carried_job_ids()};
            },
            [&inbox](blacktree::amqp::PeerNews news) { inbox(std::move(news)); });
      }
      rc = dispatch_until_signal(
          plane, source, sink, signals,
          [&] {
            source.cancel_consumer();
            if (cancel_source) cancel_source->cancel_consumer();
          },
          ready, publish, gate, inbox,
          [&] {
            return blacktree::amqp::prometheus_text(source.stats(), sink.stats(), events.stats()) +
                   queue_depth_metrics(depth);
          },
          [&] { return queue_depth_text(depth); });
      if (cancel_source) cancel_source->stop();
      if (peers) peers->stop();
      events.stop();
      sink.stop();
      source.stop();
    } catch (const std::invalid_argument& e) {
      log->error("{}", e.what());
      rc = 2;
    }
  }
  plane.stop();
  return rc;
}
