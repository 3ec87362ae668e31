// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "ops_server.hpp"

#include "service.hpp"

#include <httplib.h>

namespace blacktree::service {

OpsServer::OpsServer(ReadyFn ready, MetricsFn metrics, std::string notice)
    : server_(std::make_unique<httplib::Server>()) {
  server_->new_task_queue = [] { return new httplib::ThreadPool(16); };
  server_->Get("/healthz", [ready = std::move(ready), notice = std::move(notice)](const httplib::Request&,
                                                                                   httplib::Response& res) {
    const auto why_not = ready();
    res.status = why_not.empty() ? 200 : 503;
    res.set_content((why_not.empty() ? "ok\n" : why_not + "\n") + (notice.empty() ? "" : notice + "\n"),
                    "text/plain");
  });
  server_->Get("/metrics", [metrics = std::move(metrics)](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });
}

OpsServer::~OpsServer() { stop(); }

int OpsServer::start(const std::string& address) {
  const auto colon = address.rfind(':');
  const std::string host = address.substr(0, colon == std::string::npos ? address.size() : colon);
  const int port = colon == std::string::npos ? 0 : port_of(address);
  const int bound = port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) return 0;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return bound;
}

void OpsServer::stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace blacktree::service
