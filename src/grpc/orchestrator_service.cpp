// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/grpc/orchestrator_service.hpp>

#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <unordered_map>
#include <vector>

namespace blacktree::grpc {
namespace {

namespace v1 = ::blacktree::v1;

::grpc::ServerUnaryReactor* finish(::grpc::CallbackServerContext* context, const ::grpc::Status& status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// Under mutual TLS the certificate, not the request, says which worker is
// calling: worker A's certificate cannot register or deregister B.
::grpc::Status check_worker_identity(const OrchestratorServiceOptions& options,
                                     const ::grpc::CallbackServerContext& context, std::string_view worker_id) {
  if (!options.require_worker_certificate) return ::grpc::Status::OK;
  const auto names = peer_names(context);
  if (names.empty()) {
    return {::grpc::StatusCode::UNAUTHENTICATED,
            "this orchestrator requires a client certificate from its CA (--tls-cert, --tls-key, --tls-ca)"};
  }
  if (std::find(names.begin(), names.end(), worker_id) == names.end()) {
    return {::grpc::StatusCode::PERMISSION_DENIED,
            fmt::format("the caller's certificate does not name worker '{}': a worker may register and deregister "
                        "only the id its certificate names (common name or DNS subject alternative name)",
                        worker_id)};
  }
  return ::grpc::Status::OK;
}

}  // namespace

OrchestratorService::OrchestratorService(core::WorkerPool& pool, OrchestratorServiceOptions options,
                                         Listener listener)
    : pool_(pool), options_(std::move(options)), listener_(std::move(listener)) {}

::grpc::Status OrchestratorService::authorize(const ::grpc::CallbackServerContext& context) const {
  if (options_.registration_token.empty()) return ::grpc::Status::OK;
  const auto token = bearer_of(context);
  if (!token) {
    return {::grpc::StatusCode::UNAUTHENTICATED,
            "this orchestrator requires a registration token: configure the worker's registration token"};
  }
  if (!same_secret(*token, options_.registration_token)) {
    return {::grpc::StatusCode::PERMISSION_DENIED,
            "the registration token is wrong: the worker's token must equal the orchestrator's"};
  }
  return ::grpc::Status::OK;
}

::grpc::ServerUnaryReactor* OrchestratorService::Register(::grpc::CallbackServerContext* context,
                                                          const v1::RegisterRequest* request,
                                                          v1::RegisterReply* reply) {
  if (auto status = authorize(*context); !status.ok()) return finish(context, status);
  if (auto status = check_worker_identity(options_, *context, request->worker().id()); !status.ok())
    return finish(context, status);
  if (request->worker().capacity() > options_.max_worker_capacity) {
    return finish(context, {::grpc::StatusCode::INVALID_ARGUMENT,
                            fmt::format("capacity {} is above this orchestrator's maximum of {} "
                                        "(--max-worker-capacity): register with a capacity of 1 to {}",
                                        request->worker().capacity(), options_.max_worker_capacity,
                                        options_.max_worker_capacity)});
  }
  core::WorkerInfo info = wire::from_proto(request->worker());
  const bool known = pool_.find(info.id).has_value();
  // register_worker handles both: a new incarnation (a restart) starts over
  // and voids the old one's leases; the same incarnation just updates. Its
  // error says which rule the registration broke.
  // The jobs it carries from an orchestrator it lost: their deliveries
  // attach to those runs (Dispatcher, WorkerPool::claim).
  std::vector<std::string> carried(request->running_jobs().begin(), request->running_jobs().end());
  carried.insert(carried.end(), request->finished_jobs().begin(), request->finished_jobs().end());
  const std::size_t carried_count = carried.size();
  if (auto registered = pool_.register_worker(info, std::move(carried)); !registered) {
    // A second live process with this id: ALREADY_EXISTS tells it that it is
    // not its own input that is wrong (the pool's message says who holds the id).
    const bool held = registered.error().code() == core::errc::duplicate_worker;
    return finish(context, {held ? ::grpc::StatusCode::ALREADY_EXISTS : ::grpc::StatusCode::INVALID_ARGUMENT,
                            registered.error().message()});
  }
  reply->set_orchestrator_id(options_.orchestrator_id);
  reply->set_ping_interval_ms(static_cast<std::uint32_t>(options_.ping_interval.count()));
  reply->set_ping_timeout_ms(static_cast<std::uint32_t>(options_.ping_timeout.count()));
  if (options_.worker_secrets) reply->set_worker_secret(options_.worker_secrets->issue(info.id));
  if (listener_) {
    std::string how = known ? "registered again" : "registered";
    if (carried_count > 0)
      how += fmt::format(", carrying {} job(s) from before ({} running, {} finished)", carried_count,
                         request->running_jobs_size(), request->finished_jobs_size());
    listener_(info, true, how);
  }
  return finish(context, ::grpc::Status::OK);
}

::grpc::ServerUnaryReactor* OrchestratorService::Deregister(::grpc::CallbackServerContext* context,
                                                            const v1::DeregisterRequest* request,
                                                            v1::DeregisterReply* /*reply*/) {
  if (auto status = authorize(*context); !status.ok()) return finish(context, status);
  if (auto status = check_worker_identity(options_, *context, request->worker_id()); !status.ok())
    return finish(context, status);
  auto* reactor = context->DefaultReactor();
  auto leave = [this, reactor, id = request->worker_id(),
                reason = request->reason().empty() ? std::string("the worker deregistered") : request->reason()] {
    auto snapshot = pool_.find(id);
    if (auto removed = pool_.deregister(id, reason); !removed) {
      reactor->Finish({::grpc::StatusCode::NOT_FOUND, removed.error().message()});
      return;
    }
    if (options_.worker_secrets) options_.worker_secrets->forget(id);
    if (listener_ && snapshot && snapshot->info) listener_(*snapshot->info, false, reason);
    reactor->Finish(::grpc::Status::OK);
  };
  std::function<void(const std::string&, std::function<void()>)> settle;
  {
    std::lock_guard lock(settle_->mutex);
    settle = settle_->runs_ended;
  }
  if (!settle) {
    leave();
    return reactor;
  }
  // Only once the results its last streams carried were taken: leaving voids
  // the worker's leases, and a result still being read would be called lost.
  settle(request->worker_id(), [alive = settle_, leave = std::move(leave)] {
    std::lock_guard lock(alive->mutex);
    if (alive->open) leave();
  });
  return reactor;
}

void OrchestratorService::settle_runs_before_deregister(
    std::function<void(const std::string& worker_id, std::function<void()> then)> runs_ended) {
  std::lock_guard lock(settle_->mutex);
  settle_->runs_ended = std::move(runs_ended);
}

OrchestratorService::~OrchestratorService() {
  std::lock_guard lock(settle_->mutex);
  settle_->open = false;
}

::grpc::ServerUnaryReactor* OrchestratorService::ListWorkers(::grpc::CallbackServerContext* context,
                                                             const v1::ListWorkersRequest* /*request*/,
                                                             v1::ListWorkersReply* reply) {
  if (auto status = authorize(*context); !status.ok()) return finish(context, status);
  const auto now_steady = std::chrono::steady_clock::now();
  const auto now_system = std::chrono::system_clock::now();
  std::unordered_map<std::string, std::vector<std::string>> running;  // worker id -> its jobs
  if (options_.jobs) {
    for (const auto& job : options_.jobs->jobs(false)) {
      if (job.state == core::BoardState::running) running[job.worker_id].push_back(job.id);
    }
  }
  for (const auto& worker : pool_.snapshot()) {
    if (!worker.info) continue;
    auto* status = reply->add_workers();
    if (auto it = running.find(worker.info->id); it != running.end()) {
      for (auto& id : it->second) status->add_running_jobs(std::move(id));
    }
    *status->mutable_worker() = wire::to_proto(*worker.info);
    status->set_state(wire::to_proto(worker.state));
    status->set_running(worker.in_use);
    if (worker.last_seen != std::chrono::steady_clock::time_point{}) {
      const auto seen = now_system - std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                         now_steady - worker.last_seen);
      *status->mutable_last_seen() = google::protobuf::util::TimeUtil::NanosecondsToTimestamp(
          std::chrono::duration_cast<std::chrono::nanoseconds>(seen.time_since_epoch()).count());
    }
  }
  return finish(context, ::grpc::Status::OK);
}

::grpc::ServerUnaryReactor* OrchestratorService::ListJobs(::grpc::CallbackServerContext* context,
                                                          const v1::ListJobsRequest* request, v1::ListJobsReply* reply) {
  if (auto status = authorize(*context); !status.ok()) return finish(context, status);
  if (!options_.jobs) {
    return finish(context, {::grpc::StatusCode::FAILED_PRECONDITION, "this orchestrator keeps no list of its jobs"});
  }
  for (const auto& job : options_.jobs->jobs(request->finished())) *reply->add_jobs() = wire::to_proto(job);
  return finish(context, ::grpc::Status::OK);
}

}  // namespace blacktree::grpc
