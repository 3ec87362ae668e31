// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree-worker: serves blacktree.v1.Worker, registers with the
// orchestrator, runs jobs through a JobRunner. Configuration, wiring and
// signal handling only; the logic lives in blacktree::grpc and blacktree::worker.

#include "../common/ops_server.hpp"
#include "../common/service.hpp"

#include <blacktree/grpc/credentials.hpp>
#include <blacktree/grpc/registrar.hpp>
#include <blacktree/grpc/worker_service.hpp>
#include <blacktree/version.hpp>
#include <blacktree/worker/argv_runner.hpp>
#include <blacktree/worker/build_pipeline.hpp>
#include <blacktree/worker/job_dir.hpp>
#include <blacktree/worker/metered_runner.hpp>
#include <blacktree/worker/noop_runner.hpp>

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <csignal>
#include <filesystem>
#include <stop_token>
#include <unistd.h>

namespace {

namespace level = spdlog::level;
using blacktree::service::log_event;

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

// One line when a job starts on this worker (debug), one when it is asked to
// stop, one when it ends (with its outcome); the job's own output goes to its
// progress events, not here. Thread-safe: jobs run on the service's threads.
class LoggedRunner final : public blacktree::worker::JobRunner {
 public:
  LoggedRunner(JobRunner& inner, std::shared_ptr<spdlog::logger> log, std::string worker_id)
      : inner_(inner), log_(std::move(log)), worker_id_(std::move(worker_id)) {}

  blacktree::core::JobResult run(const blacktree::core::Job& job, const blacktree::worker::EmitFn& emit,
                                 std::stop_token stop) override {
    // One info line per job (job.finished); this one at debug.
    log_event(*log_, level::debug,
              {.event = "job.accepted", .job_id = job.id, .worker_id = worker_id_, .phase = "running"},
              "job {} accepted", job.id);
    blacktree::core::JobResult result;
    {
      // Runs on the thread that asks (a Cancel call, the caller leaving, the
      // worker stopping), or here if that happened already.
      std::stop_callback asked(stop, [this, &job] {
        log_event(*log_, level::info,
                  {.event = "job.cancel", .job_id = job.id, .worker_id = worker_id_, .phase = "running"},
                  "job {} asked to stop (cancelled, taken back, no orchestrator came back for it, or this worker "
                  "stopping)", job.id);
      });
      result = inner_.run(job, emit, stop);
    }
    const std::string_view outcome = result.success                               ? "succeeded"
                                      : result.cancelled || stop.stop_requested() ? "cancelled"
                                                                                  : "failed";
    const blacktree::service::LogFields fields{.event = "job.finished", .job_id = job.id, .worker_id = worker_id_,
                                               .phase = "finished", .outcome = outcome, .reason = result.error};
    if (result.success) {
      log_event(*log_, level::info, fields, "job {} succeeded", job.id);
    } else {
      log_event(*log_, level::warn, fields, "job {} {}: {}", job.id, outcome, result.error);
    }
    return result;
  }
  void after_result(const blacktree::core::Job& job) noexcept override { inner_.after_result(job); }
  // Two log lines do not make a job that returns at once a blocking one.
  bool immediate() const noexcept override { return inner_.immediate(); }

 private:
  JobRunner& inner_;
  std::shared_ptr<spdlog::logger> log_;
  std::string worker_id_;
};

}  // namespace

int main(int argc, char** argv) {
  // Signals are taken by sigwait below; block them before any thread starts.
  blacktree::service::disable_core_dumps();  // tokens and credentials live in this memory
  blacktree::service::skip_lock_order_checks();
  const sigset_t signals = blacktree::service::block_termination_signals();

  CLI::App app{"blacktree-worker: runs build jobs handed to it by a blacktree orchestrator"};
  app.set_version_flag("--version", std::string(BLACKTREE_VERSION_STRING));
  blacktree::service::add_config_file_option(app);

  std::vector<std::string> orchestrators{"127.0.0.1:50051"};
  std::string worker_id;
  std::string region;
  std::vector<std::string> label_items;
  std::uint32_t capacity = 1;
  std::string listen = "0.0.0.0:50052";
  std::string http_listen;
  std::string advertise;
  std::string token_file;
  std::string token;
  std::string runner_kind = "build";
  blacktree::worker::BuildPipelineConfig build;
  std::string registry_auth = "none";
  std::string registry_username;
  std::string registry_password_file;
  std::string registry_credential_helper;
  std::string work_root = build.work_root.string();
  std::vector<std::string> runner_argv;
  std::uint32_t job_timeout_s = 1800;
  std::uint32_t drain_timeout_s = 60;
  std::uint32_t heartbeat_interval_ms = 5000;
  std::uint32_t orphan_grace_s = 600;
  blacktree::service::LogOptions log_options;
  blacktree::service::TlsFlags tls_flags;
  std::string orchestrator_name = "blacktree-orchestrator";

  app.add_option("--orchestrator-addr", orchestrators,
                 "the orchestrators' gRPC addresses (host:port; repeatable, or comma-separated): it registers "
                 "with one, and fails over to the next when it loses it")
      ->envname("ORCHESTRATOR_ADDR")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--worker-id", worker_id, "this worker's id (default: <hostname>-<random>, stable for the process)")
      ->envname("WORKER_ID");
  app.add_option("--region", region, "the region label jobs may require")->envname("WORKER_REGION");
  app.add_option("--label", label_items, "extra labels, key=value (repeatable, or comma-separated)")
      ->envname("WORKER_LABELS");
  app.add_option("--capacity", capacity, "jobs run at once")
      ->envname("WORKER_CAPACITY")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  app.add_option("--http-listen", http_listen,
                 "where to serve /healthz and /metrics (host:port, e.g. 0.0.0.0:9091; port 0 picks one; empty: off)")
      ->envname("WORKER_HTTP_LISTEN");
  app.add_option("--listen", listen, "where to serve gRPC (host:port; port 0 picks one)")
      ->envname("WORKER_LISTEN")
      ->capture_default_str();
  app.add_option("--advertise", advertise,
                 "the address the orchestrator dials (default: the listen address, or <hostname>:<port> when "
                 "listening on all interfaces)")
      ->envname("WORKER_ADVERTISE_ADDR");
  app.add_option("--registration-token-file", token_file, "file holding the orchestrator's registration token")
      ->envname("BLACKTREE_REGISTRATION_TOKEN_FILE");
  app.add_option("--runner", runner_kind,
                 "what a job runs: build (clone, build, push the job's image), argv (a fixed command) or noop "
                 "(succeed at once: for benchmarks and plumbing checks)")
      ->envname("WORKER_RUNNER")
      ->check(CLI::IsMember({"build", "argv", "noop"}))
      ->capture_default_str();
  app.add_option("--registry", build.registry, "for --runner build: where images are pushed, host[:port][/prefix]")
      ->envname("REGISTRY");
  app.add_option("--registry-auth", registry_auth, "none, password (user + password file) or helper")
      ->envname("REGISTRY_AUTH")
      ->check(CLI::IsMember({"none", "password", "helper"}))
      ->capture_default_str();
  app.add_option("--registry-username", registry_username, "for --registry-auth password")
      ->envname("REGISTRY_USERNAME");
  app.add_option("--registry-password-file", registry_password_file, "for --registry-auth password")
      ->envname("REGISTRY_PASSWORD_FILE");
  app.add_option("--registry-credential-helper", registry_credential_helper,
                 "for --registry-auth helper: NAME of docker-credential-NAME (e.g. ecr-login)")
      ->envname("REGISTRY_CREDENTIAL_HELPER");
  bool registry_insecure = false;
  app.add_flag("--registry-insecure", registry_insecure,
               "push over plain HTTP / without TLS verification (a local registry)")
      ->envname("REGISTRY_INSECURE");
  app.add_option("--work-root", work_root, "where per-job directories are made (and removed)")
      ->envname("WORKER_WORK_ROOT")
      ->capture_default_str();
  std::string cache_dir;
  app.add_option("--cache-dir", cache_dir,
                 "the image store jobs share (base images, layers of earlier builds); default: cache beside "
                 "--work-root")
      ->envname("WORKER_CACHE_DIR");
  app.add_option("--cache-max-bytes", build.cache_max_bytes,
                 "the image cache's budget: over it, the least recently used images are pruned between jobs "
                 "(0: no budget), e.g. 20GB")
      ->envname("WORKER_CACHE_MAX_BYTES")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--cache-min-free-bytes", build.cache_min_free_bytes,
                 "prune the image cache also when its file system has less free than this (0: never), e.g. 2GB")
      ->envname("WORKER_CACHE_MIN_FREE_BYTES")
      ->transform(CLI::AsSizeValue(false))
      ->capture_default_str();
  app.add_option("--storage-driver", build.buildah_storage_driver,
                 "buildah's storage driver: overlay, vfs (copies every layer, works everywhere) or auto (overlay "
                 "where this host allows it)")
      ->envname("WORKER_STORAGE_DRIVER")
      ->check(CLI::IsMember({"auto", "overlay", "vfs"}))
      ->capture_default_str();
  app.add_option("--github-base-url", build.github_base_url, "base URL for owner/name repositories")
      ->envname("GITHUB_BASE_URL")
      ->capture_default_str();
  app.add_flag("--allow-http-repos", build.allow_http_repos, "allow http:// repository URLs")
      ->envname("WORKER_ALLOW_HTTP_REPOS");
  app.add_flag("--allow-file-repos", build.allow_file_repos, "allow file:// repository URLs")
      ->envname("WORKER_ALLOW_FILE_REPOS");
  app.add_option("--token-hosts", build.token_hosts,
                 "hosts besides the GitHub base URL's that a job's githubToken may be sent to: host or host:port "
                 "(repeatable, or comma-separated)")
      ->envname("WORKER_TOKEN_HOSTS")
      ->delimiter(',');
  std::string build_network = "private";
  app.add_option("--build-network", build_network,
                 "the network of a build's RUN steps: none (loopback only), private (outbound through slirp4netns, "
                 "no route to this host or 169.254.0.0/16) or host (this host's network, trusted Dockerfiles only)")
      ->envname("WORKER_BUILD_NETWORK")
      ->check(CLI::IsMember({"none", "private", "host"}))
      ->capture_default_str();
  app.add_option("--build-network-blocked", build.build_network_blocked,
                 "more IPv4 addresses or CIDRs a private build has no route to (repeatable, or comma-separated)")
      ->envname("WORKER_BUILD_NETWORK_BLOCKED")
      ->delimiter(',');
  app.add_option("--layer-cache-repo", build.layer_cache_repo,
                 "a registry repository (host[:port]/path) for the fleet's build-step layers: builds push the steps "
                 "they ran and pull the ones they lack, so a new worker starts warm")
      ->envname("WORKER_LAYER_CACHE_REPO");
  std::vector<std::string> pull_auth_items;
  app.add_option("--pull-auth", pull_auth_items,
                 "credentials for pulling base images from another registry: HOST=password:USER:FILE or "
                 "HOST=helper:NAME (docker-credential-NAME); repeatable, or comma-separated")
      ->envname("WORKER_PULL_AUTH")
      ->delimiter(',');
  std::vector<std::string> mirror_items;
  app.add_option("--registry-mirror", mirror_items,
                 "UPSTREAM=MIRROR: pull base images of registry UPSTREAM (e.g. docker.io) from MIRROR "
                 "(host[:port][/prefix]) first; repeatable, or comma-separated")
      ->envname("WORKER_REGISTRY_MIRRORS")
      ->delimiter(',');
  std::vector<std::string> build_secret_items;
  app.add_option("--build-secret", build_secret_items,
                 "NAME=FILE: a build secret jobs may mount by name (JobRequest buildSecrets, RUN "
                 "--mount=type=secret,id=NAME); repeatable, or comma-separated")
      ->envname("WORKER_BUILD_SECRETS")
      ->delimiter(',');
  app.add_option("--log-tail-bytes", build.log_tail_bytes, "how much of a job's output its status keeps")
      ->envname("WORKER_LOG_TAIL_BYTES")
      ->capture_default_str();
  app.add_option("--runner-argv,command", runner_argv,
                 "for --runner argv: the command and its arguments, no shell (or after `--`)")
      ->envname("WORKER_RUNNER_ARGV");
  app.add_option("--job-timeout-s", job_timeout_s, "a job's time limit when the job sets none")
      ->envname("WORKER_JOB_TIMEOUT_S")
      ->capture_default_str();
  app.add_option("--drain-timeout-s", drain_timeout_s, "on SIGTERM, how long running jobs may take to finish")
      ->envname("WORKER_DRAIN_TIMEOUT_S")
      ->capture_default_str();
  app.add_option("--orchestrator-name", orchestrator_name,
                 "under mutual TLS, the name the orchestrator's certificate must carry (common name or DNS SAN) for "
                 "this worker to obey its calls")
      ->envname("BLACKTREE_ORCHESTRATOR_NAME")
      ->capture_default_str();
  app.add_option("--orphan-grace-s", orphan_grace_s,
                 "a job whose orchestrator went away runs on this long, and its result is kept this long, for an "
                 "orchestrator to attach to it (0: such a job stops at once)")
      ->envname("WORKER_ORPHAN_GRACE_S")
      ->check(CLI::Range(0u, 86400u))
      ->capture_default_str();
  app.add_option("--heartbeat-interval-ms", heartbeat_interval_ms,
                 "how often a running job's stream carries a heartbeat when nothing else is sent (0: never)")
      ->envname("WORKER_HEARTBEAT_INTERVAL_MS")
      ->capture_default_str();
  blacktree::service::add_tls_options(app, tls_flags, true);
  blacktree::service::add_log_options(app, log_options);
  blacktree::service::one_value_per_flag(app);
  CLI11_PARSE(app, argc, argv);

  const blacktree::grpc::TlsOptions tls{tls_flags.cert, tls_flags.key, tls_flags.ca,
                                        std::chrono::seconds(tls_flags.reload_interval_s)};
  try {
    token = blacktree::service::value_or_usage_error(blacktree::service::registration_token(token_file));
    if (tls.enabled()) blacktree::service::value_or_usage_error(blacktree::grpc::check_tls_files(tls));
    blacktree::service::value_or_usage_error(
        blacktree::grpc::require_authentication("worker", tls.enabled(), !token.empty(), tls_flags.insecure));
    if (tls.enabled() && orchestrator_name.empty()) {
      throw CLI::ValidationError("--orchestrator-name", "must name the orchestrator's certificate under mutual TLS");
    }
    if (runner_kind == "argv" && runner_argv.empty()) {
      throw CLI::ValidationError("--runner-argv", "--runner argv needs the command to run, e.g. -- true");
    }
    if (runner_kind == "build" && build.registry.empty()) {
      throw CLI::ValidationError("--registry", "--runner build needs the registry to push to (or env REGISTRY)");
    }
    if (registry_auth == "password" && (registry_username.empty() || registry_password_file.empty())) {
      throw CLI::ValidationError("--registry-auth", "password needs --registry-username and --registry-password-file");
    }
    if (registry_auth == "helper" && registry_credential_helper.empty()) {
      throw CLI::ValidationError("--registry-auth", "helper needs --registry-credential-helper NAME");
    }
  } catch (const CLI::Error& e) {
    return app.exit(e);
  }

  auto log = blacktree::service::make_logger("worker", log_options);
  log->info("a job's processes are contained by {}",
            blacktree::worker::to_string(blacktree::worker::automatic_containment()));
  if (auto ended = blacktree::worker::end_orphaned_job_cgroups(); ended > 0) {
    log->warn("ended {} job cgroup(s) left running by a worker that was killed before it could clean up", ended);
  }
  if (worker_id.empty()) worker_id = host_name() + "-" + blacktree::service::random_hex(6);

  blacktree::core::WorkerInfo self;
  self.id = worker_id;
  self.capacity = capacity;
  self.version = std::string(BLACKTREE_VERSION_STRING);
  self.incarnation = blacktree::service::random_hex(16);
  auto labels = blacktree::service::parse_labels(label_items);
  if (!labels) return app.exit(CLI::ValidationError(labels.error().message()));
  self.labels = std::move(*labels);
  if (!region.empty()) self.labels.insert_or_assign("region", region);

  std::unique_ptr<blacktree::worker::JobRunner> runner;
  const blacktree::worker::BuildPipelineRunner* build_runner = nullptr;  // for the cache's metrics
  if (runner_kind == "noop") {
    runner = std::make_unique<blacktree::worker::NoopRunner>();
  } else if (runner_kind == "argv") {
    blacktree::worker::ArgvRunnerConfig config;
    config.argv = runner_argv;
    config.default_timeout = std::chrono::seconds(job_timeout_s);
    runner = std::make_unique<blacktree::worker::ArgvRunner>(std::move(config));
  } else {
    using Credentials = blacktree::worker::RegistryCredentials;
    build.work_root = work_root;
    build.cache_dir = cache_dir;
    for (const auto& item : mirror_items) {
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
        return app.exit(CLI::ValidationError("--registry-mirror", "each item must be UPSTREAM=MIRROR"));
      }
      build.registry_mirrors.insert_or_assign(item.substr(0, eq), item.substr(eq + 1));
    }
    for (const auto& item : pull_auth_items) {
      // HOST=password:USER:FILE or HOST=helper:NAME
      const auto eq = item.find('=');
      const std::string host = eq == std::string::npos ? "" : item.substr(0, eq);
      const std::string how = eq == std::string::npos ? "" : item.substr(eq + 1);
      Credentials creds;
      if (how.rfind("helper:", 0) == 0 && how.size() > 7) {
        creds = {Credentials::Kind::helper, {}, {}, how.substr(7)};
      } else if (const auto colon = how.find(':', 9); how.rfind("password:", 0) == 0 && colon != std::string::npos &&
                                                        colon > 9 && colon + 1 < how.size()) {
        creds = {Credentials::Kind::static_password, how.substr(9, colon - 9), how.substr(colon + 1), {}};
      }
      if (host.empty() || creds.kind == Credentials::Kind::none) {
        return app.exit(CLI::ValidationError("--pull-auth", "each item must be HOST=password:USER:FILE or HOST=helper:NAME"));
      }
      build.pull_credentials.insert_or_assign(host, std::move(creds));
    }
    for (const auto& item : build_secret_items) {
      const auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
        return app.exit(CLI::ValidationError("--build-secret", "each item must be NAME=FILE"));
      }
      build.build_secrets.insert_or_assign(item.substr(0, eq), item.substr(eq + 1));
    }
    build.registry_tls_verify = !registry_insecure;
    build.default_timeout = std::chrono::seconds(job_timeout_s);
    build.build_network = build_network == "none"   ? blacktree::worker::BuildNetwork::none
                          : build_network == "host" ? blacktree::worker::BuildNetwork::host
                                                    : blacktree::worker::BuildNetwork::private_network;
    if (registry_auth == "password") {
      build.credentials = {Credentials::Kind::static_password, registry_username, registry_password_file, {}};
    } else if (registry_auth == "helper") {
      build.credentials = {Credentials::Kind::helper, {}, {}, registry_credential_helper};
    }
    // A previous process killed mid-job (kill -9, power loss) left its job
    // directories, credentials included; no job runs yet, so all are stale.
    for (const auto& stale : blacktree::worker::remove_stale_job_dirs(build.work_root)) {
      if (stale.error)
        log->warn("cannot remove the stale job directory {}: {}", stale.path.string(), stale.error.message());
      else
        log->info("removed the stale job directory {}", stale.path.string());
    }
    build.on_event = [log](std::string_view what) {
      log_event(*log, level::info, {.event = "worker.pipeline", .reason = what}, "{}", what);
    };
    auto pipeline = std::make_unique<blacktree::worker::BuildPipelineRunner>(build);
    if (auto usable = pipeline->check(); !usable) {
      log->error("the build pipeline cannot run here: {}", usable.error().message());
      return 1;
    }
    log->info("build pipeline: buildah, pushing to {}, job directories under {}, {}", build.registry, work_root,
              pipeline->storage());
    build_runner = pipeline.get();
    runner = std::move(pipeline);
  }
  blacktree::worker::MeteredRunner metered(*runner, build_runner);
  LoggedRunner logged(metered, log, worker_id);

  blacktree::grpc::WorkerServiceOptions service_options;
  service_options.worker_id = worker_id;
  service_options.incarnation = self.incarnation;
  service_options.capacity = capacity;
  service_options.heartbeat_interval = std::chrono::milliseconds(heartbeat_interval_ms);
  service_options.orphan_grace = std::chrono::seconds(orphan_grace_s);
  service_options.log = [log, worker_id](blacktree::grpc::WorkerServiceEvent event, std::string_view job_id,
                                         std::string_view line) {
    using blacktree::grpc::WorkerServiceEvent;
    const bool loss = event == WorkerServiceEvent::orphan_stopped || event == WorkerServiceEvent::result_dropped;
    log_event(*log, loss ? level::warn : level::info,
              {.event = blacktree::grpc::to_string(event), .job_id = job_id, .worker_id = worker_id}, "{}", line);
  };
  blacktree::grpc::WorkerService service(logged, std::move(service_options));
  // Obeys only the orchestrator it registered with: its certificate (under
  // mutual TLS) and that registration's secret (unless --insecure).
  service.set_caller_policy({tls.enabled() ? orchestrator_name : std::string(), !tls_flags.insecure});
  if (tls_flags.insecure) {
    log->warn("--insecure: {}", tls.enabled() ? "this worker obeys any caller whose certificate names the "
                                                  "orchestrator, without checking its registration secret"
                                                : "this worker serves gRPC without TLS and obeys any caller "
                                                  "that reaches its port");
  }

  ::grpc::EnableDefaultHealthCheckService(true);
  ::grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, *blacktree::grpc::server_credentials(tls), &port);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  if (!server || port == 0) {
    log->error("cannot listen on {}: is the address valid and the port free?", listen);
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(true);

  if (advertise.empty()) {
    const auto host = listen.substr(0, listen.rfind(':'));
    const bool any = host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::";
    advertise = (any ? host_name() : host) + ":" + std::to_string(port);
  }
  self.address = advertise;
  log_event(*log, level::info, {.event = "worker.started", .worker_id = worker_id},
            "worker {} serving on port {} (advertised as {}), capacity {}, labels {}", worker_id, port, advertise,
            capacity, blacktree::core::to_string(self.labels));

  blacktree::grpc::RegistrarOptions registrar_options;
  registrar_options.orchestrator_addresses = orchestrators;
  registrar_options.carried_jobs = [&service] { return service.carried_jobs(); };
  registrar_options.self = self;
  registrar_options.registration_token = token;
  registrar_options.credentials = *blacktree::grpc::channel_credentials(tls);
  blacktree::grpc::Registrar registrar(
      registrar_options,
      [&service, &registrar](const std::string& id) {
        service.set_orchestrator_secret(registrar.worker_secret());
        service.set_orchestrator_id(id);
      },
      [log, worker_id](blacktree::grpc::RegistrarEvent event, std::string_view line) {
        using blacktree::grpc::RegistrarEvent;
        const bool trouble = event == RegistrarEvent::refused || event == RegistrarEvent::failed ||
                             event == RegistrarEvent::deregistration_failed;
        log_event(*log, trouble ? level::warn : level::info,
                  {.event = blacktree::grpc::to_string(event), .worker_id = worker_id, .reason = line}, "{}", line);
      });
  service.set_ping_listener([&registrar](std::string_view id) { registrar.on_ping(id); });
  registrar.start();

  blacktree::service::OpsServer ops([&registrar] { return registrar.registered() ? std::string() : "not registered with an orchestrator"; },
                                    [&metered] { return metered.render(); },
                                    tls_flags.insecure ? "--insecure: this worker does not check who calls it" : "");
  if (!http_listen.empty()) {
    const int bound = ops.start(http_listen);
    if (bound == 0) {
      log->error("cannot serve /healthz and /metrics on {}: is the address valid and the port free?", http_listen);
      return 1;
    }
    log->info("serving /healthz and /metrics on port {}", bound);
  }

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  log_event(*log, level::info,
            {.event = "worker.draining", .worker_id = worker_id, .state = "draining",
             .reason = strsignal(signal_number)},
            "received {}: draining (up to {} s for {} running job(s))", strsignal(signal_number), drain_timeout_s,
            service.running());
  blacktree::grpc::ShutdownOptions shutdown;
  shutdown.drain_timeout = std::chrono::seconds(drain_timeout_s);
  if (auto drained = service.shutdown(&registrar, shutdown); !drained) {
    const std::string why = drained.error().message();
    log_event(*log, level::warn, {.event = "worker.drain_deadline", .worker_id = worker_id, .reason = why}, "{}", why);
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  log_event(*log, level::info, {.event = "worker.stopped", .worker_id = worker_id, .state = "stopped"},
            "worker {} stopped", worker_id);
  return 0;
}
