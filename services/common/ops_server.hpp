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

/// /healthz and /metrics on their own thread (cpp-httplib).
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

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace blacktree::service
