// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
// blacktree::grpc alone: the orchestrator's transport, made and stopped (no worker needed).
#include <blacktree/grpc/transport.hpp>

#include <asio/io_context.hpp>

#include <cstdio>

int main() {
  asio::io_context io;
  blacktree::grpc::TransportOptions options;
  options.orchestrator_id = "consumer";
  { blacktree::grpc::GrpcTransport transport(io.get_executor(), options); }
  io.run();
  std::printf("grpc: transport made and stopped\n");
  return 0;
}
