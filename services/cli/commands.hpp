// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The `blacktree` commands, each a plain function of its settings so main.cpp
// stays flag wiring. They print what a person needs and return the exit code.

#include <blacktree/amqp/client.hpp>
#include <blacktree/amqp/options.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/result.hpp>
#include <blacktree/grpc/credentials.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace blacktree::cli {

/// Exit codes, the same for every command (documented in `blacktree --help`).
enum ExitCode : int {
  exit_ok = 0,
  exit_job_failed = 1,     ///< submit --wait, logs -f: the job ran and failed
  exit_unreachable = 2,    ///< the broker or the orchestrator could not be used
  exit_wait_timeout = 3,   ///< submit --wait, logs -f: no result in time (the job may still run)
  exit_usage = 64,         ///< bad flags or configuration (EX_USAGE)
  // 128 + signal: interrupted (SIGINT, SIGTERM) while following a job, which keeps running.
};

struct SubmitSettings {
  // The job (the seed's JobRequest; labels and timeout are extensions).
  std::string repo;
  std::string branch = "main";
  std::string dockerfile = "Dockerfile";
  std::string context = ".";
  std::string image;
  std::string region;
  std::vector<std::string> labels;
  std::string job_id;  ///< empty: a random UUID v4
  std::uint32_t timeout_s = 0;
  std::uint32_t priority = 0;  ///< 0 to wire::max_priority; build_job refuses more
  core::Secret token;  ///< resolved by main from --token-env / --token-file

  // The broker: url, password, tls, execute_queue and events_exchange are
  // read from `amqp`, named and defaulted as for the orchestrator.
  amqp::AmqpOptions amqp;
  std::string exchange;  ///< "" (the default exchange): routing key = amqp.execute_queue
  std::uint32_t connect_timeout_s = 10;

  bool wait = false;
  std::uint32_t wait_timeout_s = 3600;
};

struct CancelSettings {
  std::string job_id;
  std::string reason;  ///< goes into the job's status; empty: "cancel requested"
  amqp::AmqpOptions amqp;  ///< url, password, tls and cancel_queue as for the orchestrator
  std::uint32_t connect_timeout_s = 10;
};

struct LogsSettings {
  std::string job_id;
  bool follow = false;  ///< -f: the only mode (the events exchange keeps no history to print)
  amqp::AmqpOptions amqp;  ///< url, password, tls and events_exchange as for the orchestrator
  std::uint32_t connect_timeout_s = 10;
  std::uint32_t wait_timeout_s = 3600;
};

/// How the admin commands (workers, jobs) reach the orchestrator's gRPC.
struct OrchestratorConnection {
  std::string address = "127.0.0.1:50051";
  core::Secret token;  ///< registration token; empty: none sent
  grpc::TlsOptions tls;  ///< mutual TLS to the orchestrator when enabled()
  std::uint32_t timeout_s = 10;
};

struct WorkersSettings {
  OrchestratorConnection orchestrator;
  bool json = false;
};

struct JobsSettings {
  OrchestratorConnection orchestrator;
  bool finished = false;  ///< also the last jobs it finished
  bool json = false;
};

/// The job the settings describe (its id a random UUID v4 when none is
/// given), or core::errc::invalid_job saying what is wrong, naming the flag.
core::Result<core::Job> build_job(const SubmitSettings& settings);
int run_submit(const SubmitSettings& settings);
int run_cancel(const CancelSettings& settings);
int run_logs(const LogsSettings& settings);
int run_workers(const WorkersSettings& settings);
int run_jobs(const JobsSettings& settings);

/// Opens `client` on the broker `options` name, each step bounded by
/// connect_timeout_s. exit_ok, or the exit code after printing what went
/// wrong and which flag to look at.
int open_broker(amqp::AmqpClient& client, amqp::AmqpOptions options, std::uint32_t connect_timeout_s);

/// A random RFC 4122 version-4 UUID, lower-case.
std::string random_uuid_v4();

}  // namespace blacktree::cli
