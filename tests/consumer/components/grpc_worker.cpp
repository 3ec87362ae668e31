// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
// blacktree::grpc_worker alone: the worker's service around a runner (no server needed).
#include <blacktree/grpc/worker_service.hpp>
#include <blacktree/worker/noop_runner.hpp>

#include <cstdio>

int main() {
  blacktree::worker::NoopRunner runner;
  blacktree::grpc::WorkerServiceOptions options;
  options.worker_id = "consumer";
  options.capacity = 2;
  blacktree::grpc::WorkerService service(runner, options);
  if (service.running() != 0) return 1;
  std::printf("grpc_worker: service ready, %zu jobs running\n", service.running());
  return 0;
}
