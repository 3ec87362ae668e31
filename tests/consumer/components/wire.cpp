// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
// blacktree::wire alone: a core job to its protobuf message and that to JSON.
#include <blacktree/wire/wire.hpp>

#include <cstdio>

int main() {
  blacktree::core::Job job;
  job.id = "consumer-job";
  const std::string json = blacktree::wire::to_json(blacktree::wire::to_proto(job));
  if (json.find("consumer-job") == std::string::npos) return 1;
  std::printf("wire: %s\n", json.c_str());
  return 0;
}
