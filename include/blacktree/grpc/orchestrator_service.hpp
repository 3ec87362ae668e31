// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// OrchestratorService: the orchestrator side of blacktree.v1.Orchestrator.
// Workers register into (and leave) a core::WorkerPool through it; operators
// list them and the jobs. When a registration token is configured, every call must carry
// `authorization: Bearer <token>` metadata; under mutual TLS a worker's
// certificate must name the worker it registers or deregisters; a capacity
// above max_worker_capacity is refused; a second live process with a
// registered worker's id is refused with ALREADY_EXISTS. A refusal says what
// is wrong without echoing what was sent.

#include <blacktree/core/job_board.hpp>
#include <blacktree/core/worker_pool.hpp>
#include <blacktree/grpc/credentials.hpp>

#include <blacktree/v1/blacktree.grpc.pb.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace blacktree::grpc {

struct OrchestratorServiceOptions {
  std::string orchestrator_id;  ///< new for every process start
  std::string registration_token;  ///< empty: no token required
  std::chrono::milliseconds ping_interval{1000};
  std::chrono::milliseconds ping_timeout{500};
  /// Under mutual TLS: Register and Deregister must come from a certificate
  /// that names the worker id (common name or DNS subject alternative name),
  /// so a worker registers, re-registers and deregisters only itself.
  bool require_worker_certificate = false;
  /// A registration offering more slots than this is refused.
  std::uint32_t max_worker_capacity = 64;
  /// When set, every Register issues the worker a fresh secret (returned in
  /// RegisterReply.worker_secret), which the transport sends with every call.
  std::shared_ptr<WorkerSecrets> worker_secrets{};
  /// What ListJobs reports, and the running jobs ListWorkers lists per
  /// worker. Null: ListJobs answers FAILED_PRECONDITION.
  const core::JobBoard* jobs = nullptr;
};

class OrchestratorService final : public ::blacktree::v1::Orchestrator::CallbackService {
 public:
  /// Told after a worker registered (first time or again) or deregistered.
  using Listener = std::function<void(const core::WorkerInfo& worker, bool registered, std::string_view detail)>;

  OrchestratorService(core::WorkerPool& pool, OrchestratorServiceOptions options, Listener listener = {});
  ~OrchestratorService() override;

  /// A deregistration waits for `runs_ended(worker_id, then)` to call `then`
  /// (from any thread): when the orchestrator holds no RunJob stream of that
  /// worker any more, or after a bound of its choosing. Call before serving.
  /// GrpcTransport::when_runs_ended is meant for it.
  void settle_runs_before_deregister(
      std::function<void(const std::string& worker_id, std::function<void()> then)> runs_ended);

  ::grpc::ServerUnaryReactor* Register(::grpc::CallbackServerContext* context, const v1::RegisterRequest* request,
                                       v1::RegisterReply* reply) override;
  ::grpc::ServerUnaryReactor* Deregister(::grpc::CallbackServerContext* context,
                                         const v1::DeregisterRequest* request, v1::DeregisterReply* reply) override;
  ::grpc::ServerUnaryReactor* ListWorkers(::grpc::CallbackServerContext* context,
                                          const v1::ListWorkersRequest* request,
                                          v1::ListWorkersReply* reply) override;
  ::grpc::ServerUnaryReactor* ListJobs(::grpc::CallbackServerContext* context, const v1::ListJobsRequest* request,
                                       v1::ListJobsReply* reply) override;

 private:
  ::grpc::Status authorize(const ::grpc::CallbackServerContext& context) const;

  core::WorkerPool& pool_;
  OrchestratorServiceOptions options_;
  Listener listener_;
  struct Settle {
    std::mutex mutex;
    bool open = true;  // false once this service is gone
    std::function<void(const std::string&, std::function<void()>)> runs_ended;
  };
  std::shared_ptr<Settle> settle_ = std::make_shared<Settle>();
};

}  // namespace blacktree::grpc
