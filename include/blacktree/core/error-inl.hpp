// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#ifndef BLACKTREE_HEADER_ONLY
#include <blacktree/core/error.hpp>
#endif

#include <blacktree/core/error_category.hpp>

namespace blacktree::core {
namespace detail {

inline std::string_view describe(errc e) noexcept {
  switch (e) {
    case errc::worker_unreachable: return "worker unreachable";
    case errc::worker_refused: return "worker refused the job";
    case errc::worker_lost: return "worker lost while running the job";
    case errc::ping_timeout: return "ping timed out";
    case errc::no_matching_worker: return "no worker with the required labels became free";
    case errc::unknown_worker: return "unknown worker";
    case errc::invalid_worker: return "invalid worker registration";
    case errc::invalid_job: return "invalid job";
    case errc::pool_stopped: return "worker pool stopped";
    case errc::source_closed: return "job source closed";
    case errc::sink_unavailable: return "status sink unavailable";
    case errc::stop_deadline_exceeded: return "stop deadline exceeded; running jobs handed back";
    case errc::duplicate_worker: return "worker id already used by another live process";
  }
  return {};
}

}  // namespace detail

BLACKTREE_INLINE const std::error_category& error_category() noexcept {
  // One object for the program, so that error_codes compare equal; it holds no state.
  static const EnumErrorCategory<errc> category("blacktree", detail::describe);
  return category;
}

}  // namespace blacktree::core
