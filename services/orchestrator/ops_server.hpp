// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The orchestrator's /healthz and /metrics endpoints. What /metrics serves is
// blacktree::core::PrometheusMetrics (include/blacktree/core/prometheus.hpp).

#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace blacktree::orchestrator {

/// /healthz and /metrics on their own thread (cpp-httplib).
class OpsServer {
 public:
  using ReadyFn = std::function<std::string()>;  ///< empty: ready; otherwise why not
  using MetricsFn = std::function<std::string()>;

  /// `notice` (e.g. that the orchestrator runs --insecure) is appended to
  /// every /healthz answer.
  OpsServer(ReadyFn ready, MetricsFn metrics, std::string notice = {});
  ~OpsServer();
  /// Binds host:port (port 0 picks one); returns the port, or 0 on failure.
  int start(const std::string& host, int port);
  void stop();

 private:
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

}  // namespace blacktree::orchestrator
