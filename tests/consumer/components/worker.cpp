// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
// blacktree::worker alone: the secret redactor the runners put every output line through.
#include <blacktree/worker/log.hpp>

#include <cstdio>

int main() {
  blacktree::worker::Redactor redactor;
  redactor.add("s3cr3t-token");
  const std::string line = redactor.apply("cloning with s3cr3t-token");
  if (line.find("s3cr3t-token") != std::string::npos) return 1;
  std::printf("worker: %s\n", line.c_str());
  return 0;
}
