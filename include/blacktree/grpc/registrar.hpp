// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Registrar: keeps a worker registered with one of its orchestrators.
//
// It registers at start with retries and exponential backoff, and registers
// again when the orchestrator no longer knows the worker: a ping from another
// orchestrator id while its own has gone quiet (it restarted and a new one
// reached us; one it failed over from and that still pings it is ignored), or no
// ping at all for `missed_pings` ping intervals (the orchestrator restarted,
// or is gone). With several orchestrator addresses, a worker whose
// orchestrator went silent tries the next address first, and an attempt that
// fails moves on to the next one, so it fails over to another orchestrator;
// the backoff grows once every address failed in a row.
// Every registration reports the jobs the worker carries (running, or with
// a kept result), so the orchestrator attaches their deliveries to them.
// On stop it deregisters, once, best effort, from the one it is registered with.
// Refused because another live worker uses the same id, it says so and keeps
// retrying (backoff_max apart): it takes the id over once that one is gone.
// One thread of its own, waiting on a condition variable, never polling.

#include <blacktree/core/job.hpp>
#include <blacktree/core/result.hpp>
#include <blacktree/grpc/error.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace grpc {
class ChannelCredentials;
}

namespace blacktree::grpc {

/// The jobs a worker reports when it registers (RegisterRequest).
struct CarriedJobs {
  std::vector<std::string> running;
  std::vector<std::string> finished;  ///< finished, their result kept for an orchestrator to collect
};

struct RegistrarOptions {
  /// host:port of each orchestrator, tried in turn (at least one).
  std::vector<std::string> orchestrator_addresses;
  core::WorkerInfo self;
  std::string registration_token;  ///< sent as `authorization: Bearer ...` when set
  std::chrono::milliseconds call_timeout{3000};
  std::chrono::milliseconds backoff_initial{200};
  std::chrono::milliseconds backoff_max{5000};
  std::uint32_t missed_pings = 3;  ///< silent ping intervals before registering again
  /// Channel credentials to the orchestrator (see channel_credentials());
  /// insecure when null.
  std::shared_ptr<::grpc::ChannelCredentials> credentials{};
  /// What each registration reports as carried (WorkerService::carried_jobs).
  std::function<CarriedJobs()> carried_jobs{};
};

/// What a Registrar reports to its log function, with a line in words.
enum class RegistrarEvent : std::uint8_t {
  registered,             ///< Register succeeded
  refused,                ///< another live worker uses this worker id: waiting for it to go
  failed,                 ///< Register failed (unreachable, refused): retrying with backoff
  registering_again,      ///< pinged by another orchestrator, or not pinged: registering again
  deregistered,
  deregistration_failed,  ///< the orchestrator will notice by pings
};

/// A short stable dotted name, for logs: "worker.registered", ...
std::string_view to_string(RegistrarEvent event) noexcept;

class Registrar {
 public:
  using LogFn = std::function<void(RegistrarEvent event, std::string_view line)>;

  /// `on_registered(orchestrator_id)` runs after every successful Register;
  /// `log(event, line)` gets one line per attempt outcome (never the token).
  Registrar(RegistrarOptions options, std::function<void(const std::string&)> on_registered, LogFn log);
  Registrar(const Registrar&) = delete;
  Registrar& operator=(const Registrar&) = delete;
  ~Registrar();  ///< stops without deregistering

  void start();
  /// Told by the worker service on every ping.
  void on_ping(std::string_view orchestrator_id);
  /// Stops the thread, then deregisters (bounded by call_timeout). Success
  /// too when there was nothing to deregister (never registered, or already
  /// done); otherwise the orchestrator's refusal or why it was not reached,
  /// also told to `log` (the orchestrator notices by pings either way).
  core::Result<void> stop_and_deregister(std::string_view reason);

  bool registered() const;
  std::string orchestrator_id() const;
  /// The address of the orchestrator it is registered with (or tries next).
  std::string orchestrator_address() const;
  std::uint64_t registrations() const;  ///< successful Register calls so far
  /// The secret of the current registration (RegisterReply.worker_secret):
  /// the orchestrator's calls carry it. Set before on_registered runs.
  std::string worker_secret() const;

 private:
  void run(std::stop_token stop);
  core::Result<void> try_register();

  RegistrarOptions options_;
  std::function<void(const std::string&)> on_registered_;
  LogFn log_;

  mutable std::mutex mutex_;
  std::condition_variable_any wake_;
  bool registered_ = false;
  bool stopped_ = false;
  std::string orchestrator_id_;
  std::string worker_secret_;
  std::chrono::milliseconds ping_interval_{1000};
  std::chrono::steady_clock::time_point last_ping_{};
  std::uint64_t registrations_ = 0;
  std::size_t current_ = 0;  // index into options_.orchestrator_addresses
  std::jthread thread_;
};

}  // namespace blacktree::grpc
