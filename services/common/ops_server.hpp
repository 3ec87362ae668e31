// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// /healthz and /metrics of the orchestrator and the worker, in Prometheus'
// text format (include/blacktree/core/prometheus.hpp).

#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace blacktree::service {

/// /healthz and /metrics (and what else is added through http()) on their
/// own thread (cpp-httplib), with a pool of 16 threads for requests: a live
/// log tail holds one.
class OpsServer {
 public:
  using ReadyFn = std::function<std::string()>;  ///< empty: ready; otherwise why not
  using MetricsFn = std::function<std::string()>;

  /// `notice` (e.g. that the process runs --insecure) is appended to
  /// every /healthz answer.
  OpsServer(ReadyFn ready, MetricsFn metrics, std::string notice = {});
  ~OpsServer();
  /// Binds `address`, host:port (port 0 picks one); returns the port, or 0
  /// on failure.
  int start(const std::string& address);
  void stop();
  /// To add routes (the orchestrator's dashboard) before start().
  httplib::Server& http() { return *server_; }

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace blacktree::service
