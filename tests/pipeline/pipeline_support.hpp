// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Helpers shared by the pipeline tests.

#include <fstream>
#include <string>

#include <signal.h>
#include <sys/types.h>

namespace blacktree::test {

/// True when `pid` no longer runs: gone, or a zombie waiting for a parent
/// (an init that does not reap) to collect it.
inline bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return true;
  const auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

}  // namespace blacktree::test
