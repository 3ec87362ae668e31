// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// bench/grpc: RunJob round trips, closed loop, `concurrency` calls in flight.
// Each implementation file measures one competitor; main.cpp runs them in the
// same process against in-process servers on 127.0.0.1 and prints ratios.

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace blacktree::bench::grpc {

/// One measured run of `calls` round trips.
struct Sample {
  double seconds = 0;             ///< wall time from the first call to the last completion
  double cpu_seconds = 0;         ///< user + system CPU of the whole process (client and server) meanwhile
  std::vector<double> latency_us; ///< per call: initiation to completion handler
  std::size_t errors = 0;         ///< calls that did not end in a successful result
};

/// A server bound to 127.0.0.1:0 that stays up for the whole benchmark.
class Server {
 public:
  virtual ~Server() = default;
  virtual std::string address() const = 0;  ///< "127.0.0.1:<port>"
};

// --- bare.cpp: the baseline, plain gRPC callback API ---------------------------------

/// blacktree.v1.Worker with trivial handlers: RunJob writes the three messages a
/// worker sends for a job that succeeds at once (accepted, a `finished` event,
/// the result) from the gRPC thread and finishes; Ping answers at once.
std::unique_ptr<Server> start_bare_server();

/// RunJob through a plain callback stub (ClientReadReactor), reading every
/// message; the next call starts from the previous one's OnDone.
Sample run_bare_stream(const std::string& address, std::size_t concurrency, std::size_t calls);

/// Unary Ping through a plain callback stub: the floor of a gRPC round trip.
Sample run_bare_ping(const std::string& address, std::size_t concurrency, std::size_t calls);

// --- blacktree.cpp: GrpcTransport against WorkerService ------------------------------

/// blacktree::grpc::WorkerService with a JobRunner that succeeds at once.
std::unique_ptr<Server> start_blacktree_server(unsigned capacity);

/// GrpcTransport::async_run on an asio::io_context run by `io_threads` threads
/// (the orchestrator runs 2), with a progress callback like the dispatcher's.
Sample run_blacktree(const std::string& address, std::size_t concurrency, std::size_t calls, unsigned io_threads);

// --- shared -------------------------------------------------------------------------

/// Process CPU time (user + system), seconds.
double process_cpu_seconds();

}  // namespace blacktree::bench::grpc
