// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#ifndef BLACKTREE_HEADER_ONLY
#include <blacktree/core/job.hpp>
#endif

namespace blacktree::core {

BLACKTREE_INLINE bool labels_match(const Labels& required, const Labels& offered) noexcept {
  for (const auto& [key, value] : required) {
    auto it = offered.find(key);
    if (it == offered.end() || it->second != value) return false;
  }
  return true;
}

BLACKTREE_INLINE std::string to_string(const Labels& labels) {
  std::string out = "{";
  for (const auto& [key, value] : labels) {
    if (out.size() > 1) out += ", ";
    out += key;
    out += '=';
    out += value;
  }
  out += '}';
  return out;
}

BLACKTREE_INLINE std::string_view to_string(Phase phase) noexcept {
  switch (phase) {
    case Phase::accepted: return "accepted";
    case Phase::running: return "running";
    case Phase::finished: return "finished";
  }
  return "unknown";
}

BLACKTREE_INLINE std::string_view to_string(WorkerState state) noexcept {
  switch (state) {
    case WorkerState::registering: return "registering";
    case WorkerState::free: return "free";
    case WorkerState::busy: return "busy";
    case WorkerState::draining: return "draining";
    case WorkerState::dead: return "dead";
  }
  return "unknown";
}

}  // namespace blacktree::core
