// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
// blacktree::core alone: a message from its error category (compiled into the library).
#include <blacktree/core/error.hpp>

#include <cstdio>

int main() {
  const std::error_code code = blacktree::core::make_error_code(blacktree::core::errc::worker_lost);
  if (code.category().name() == nullptr || code.message().empty()) return 1;
  std::printf("core: %s: %s\n", code.category().name(), code.message().c_str());
  return 0;
}
