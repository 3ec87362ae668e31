// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
// blacktree::amqp alone: the broker an MQ_URL names (no broker needed).
#include <blacktree/amqp/options.hpp>

#include <cstdio>

int main() {
  blacktree::amqp::AmqpOptions options;
  options.url = "amqp://guest:guest@broker.example:5673/jobs";
  const auto endpoint = blacktree::amqp::resolve_endpoint(options);
  if (!endpoint || endpoint->host != "broker.example" || endpoint->port != 5673) return 1;
  std::printf("amqp: %s\n", endpoint->describe().c_str());
  return 0;
}
