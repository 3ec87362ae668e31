// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/grpc/registrar.hpp>

#include "status.hpp"

#include <blacktree/wire/wire.hpp>

#include <blacktree/v1/blacktree.grpc.pb.h>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>

namespace blacktree::grpc {
namespace {

namespace v1 = ::blacktree::v1;

std::unique_ptr<v1::Orchestrator::Stub> make_stub(const std::string& address,
                                                  const std::shared_ptr<::grpc::ChannelCredentials>& credentials) {
  ::grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return v1::Orchestrator::NewStub(::grpc::CreateCustomChannel(
      address, credentials ? credentials : ::grpc::InsecureChannelCredentials(), args));
}

}  // namespace

Registrar::Registrar(RegistrarOptions options, std::function<void(const std::string&)> on_registered, LogFn log)
    : options_(std::move(options)), on_registered_(std::move(on_registered)), log_(std::move(log)) {}

Registrar::~Registrar() {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
}

void Registrar::start() {
  thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
}

void Registrar::on_ping(std::string_view orchestrator_id) {
  std::lock_guard lock(mutex_);
  if (registered_ && orchestrator_id != orchestrator_id_) {
    // Pinged by an orchestrator we did not register with: ours restarted,
    // unless ours still pings us, and this is one we left (failed over
    // from) that has not noticed yet: that one is not followed.
    if (std::chrono::steady_clock::now() - last_ping_ < 2 * ping_interval_) return;
    registered_ = false;
    wake_.notify_all();
    return;
  }
  last_ping_ = std::chrono::steady_clock::now();
  wake_.notify_all();
}

bool Registrar::registered() const {
  std::lock_guard lock(mutex_);
  return registered_;
}

std::string Registrar::orchestrator_id() const {
  std::lock_guard lock(mutex_);
  return orchestrator_id_;
}

std::string Registrar::orchestrator_address() const {
  std::lock_guard lock(mutex_);
  return options_.orchestrator_addresses.empty() ? std::string()
                                                 : options_.orchestrator_addresses[current_];
}

std::string Registrar::worker_secret() const {
  std::lock_guard lock(mutex_);
  return worker_secret_;
}

std::uint64_t Registrar::registrations() const {
  std::lock_guard lock(mutex_);
  return registrations_;
}

core::Result<void> Registrar::try_register() {
  if (options_.orchestrator_addresses.empty())
    return core::Error{errc::unavailable, "no orchestrator address to register with"};
  auto stub = make_stub(orchestrator_address(), options_.credentials);
  ::grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
  context.set_wait_for_ready(false);
  if (!options_.registration_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options_.registration_token);
  }
  v1::RegisterRequest request;
  *request.mutable_worker() = wire::to_proto(options_.self);
  if (options_.carried_jobs) {
    auto carried = options_.carried_jobs();
    for (auto& id : carried.running) request.add_running_jobs(std::move(id));
    for (auto& id : carried.finished) request.add_finished_jobs(std::move(id));
  }
  v1::RegisterReply reply;
  const auto status = stub->Register(&context, request, &reply);
  if (status.error_code() == ::grpc::StatusCode::ALREADY_EXISTS)
    return core::Error{errc::worker_id_in_use, status.error_message()};
  if (auto registered = detail::to_result(status); !registered) return registered;
  {
    std::lock_guard lock(mutex_);
    registered_ = true;
    orchestrator_id_ = reply.orchestrator_id();
    worker_secret_ = reply.worker_secret();
    ping_interval_ = std::chrono::milliseconds(std::max<std::uint32_t>(reply.ping_interval_ms(), 50));
    last_ping_ = std::chrono::steady_clock::now();  // the watchdog starts now
    ++registrations_;
  }
  if (on_registered_) on_registered_(reply.orchestrator_id());
  return {};
}

std::string_view to_string(RegistrarEvent event) noexcept {
  switch (event) {
    case RegistrarEvent::registered: return "worker.registered";
    case RegistrarEvent::refused: return "worker.registration_refused";
    case RegistrarEvent::failed: return "worker.registration_failed";
    case RegistrarEvent::registering_again: return "worker.registering_again";
    case RegistrarEvent::deregistered: return "worker.deregistered";
    case RegistrarEvent::deregistration_failed: return "worker.deregistration_failed";
  }
  return "worker.registrar";
}

void Registrar::run(std::stop_token stop) {
  auto backoff = options_.backoff_initial;
  std::size_t failed_in_a_row = 0;
  while (!stop.stop_requested()) {
    if (!registered()) {
      const std::string address = orchestrator_address();
      const auto attempt = try_register();
      if (attempt) {
        backoff = options_.backoff_initial;
        failed_in_a_row = 0;
        if (log_) {
          log_(RegistrarEvent::registered,
               fmt::format("registered with orchestrator {} at {}", orchestrator_id(), address));
        }
        continue;
      }
      // The next attempt goes to the next orchestrator; only once every one
      // failed in a row does it wait, longer each round.
      const std::size_t count = std::max<std::size_t>(options_.orchestrator_addresses.size(), 1);
      {
        std::lock_guard lock(mutex_);
        current_ = (current_ + 1) % count;
      }
      const bool round_failed = ++failed_in_a_row % count == 0;
      if (log_ && attempt.error().code() == errc::worker_id_in_use) {
        // Not flapping: this process waits, and takes the id over once the
        // orchestrator has seen the other one stop or die.
        log_(RegistrarEvent::refused,
             fmt::format("another live worker already uses worker id {}, so {} refused this one: {}; is a second "
                         "process running with the same --worker-id? Retrying in {} ms",
                         options_.self.id, address, attempt.error().message(), backoff.count()));
      } else if (log_) {
        log_(RegistrarEvent::failed,
             round_failed ? fmt::format("registration with {} failed: {}; retrying in {} ms", address,
                                        attempt.error().message(), backoff.count())
                          : fmt::format("registration with {} failed: {}; trying {} next", address,
                                        attempt.error().message(), orchestrator_address()));
      }
      if (!round_failed) continue;
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, stop, backoff, [] { return false; });
      backoff = std::min(backoff * 2, options_.backoff_max);
      continue;
    }
    // Registered: wait until the ping watchdog runs out or something changes.
    std::unique_lock lock(mutex_);
    const auto silence = ping_interval_ * options_.missed_pings;
    const bool changed = wake_.wait_until(lock, stop, last_ping_ + silence, [&] { return !registered_; });
    if (stop.stop_requested()) break;
    if (changed) {
      lock.unlock();
      if (log_) {
        log_(RegistrarEvent::registering_again,
             "pinged by an orchestrator this worker is not registered with; registering again");
      }
      continue;
    }
    if (std::chrono::steady_clock::now() >= last_ping_ + silence) {
      registered_ = false;
      // Its orchestrator is gone: the next one first. Its unacked jobs went
      // back to the queue while it was gone, to the orchestrators still
      // consuming, which a worker that carries them should register with;
      // one that restarts meanwhile has no workers, so it takes none.
      const std::size_t count = options_.orchestrator_addresses.size();
      if (count > 1) current_ = (current_ + 1) % count;
      lock.unlock();
      if (log_)
        log_(RegistrarEvent::registering_again,
             fmt::format("no ping for {} ms; registering again, with {} first", silence.count(),
                         orchestrator_address()));
    }
  }
}

core::Result<void> Registrar::stop_and_deregister(std::string_view reason) {
  thread_.request_stop();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(mutex_);
    if (stopped_ || !registered_) return {};
    stopped_ = true;
  }
  auto stub = make_stub(orchestrator_address(), options_.credentials);
  ::grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + options_.call_timeout);
  if (!options_.registration_token.empty()) {
    context.AddMetadata("authorization", "Bearer " + options_.registration_token);
  }
  v1::DeregisterRequest request;
  request.set_worker_id(options_.self.id);
  request.set_reason(std::string(reason));
  v1::DeregisterReply reply;
  auto deregistered = detail::to_result(stub->Deregister(&context, request, &reply));
  if (log_) {
    if (deregistered) {
      log_(RegistrarEvent::deregistered, "deregistered");
    } else {
      log_(RegistrarEvent::deregistration_failed,
           fmt::format("deregistration failed: {} (the orchestrator will notice by pings)",
                       deregistered.error().message()));
    }
  }
  return deregistered;
}

}  // namespace blacktree::grpc
