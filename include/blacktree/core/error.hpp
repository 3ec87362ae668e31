// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <blacktree/core/detail/config.hpp>

#include <string>
#include <system_error>

namespace blacktree::core {

/// Error codes reported by the core and expected from transports, sources and sinks.
///
/// Transports must report a failed run with one of the first three: the
/// dispatcher treats `worker_unreachable` and `worker_refused` as "the worker
/// never accepted the job" (it goes to another worker) and `worker_lost` as
/// "the job may have started and its outcome is unknown" (failure status).
enum class errc {
  worker_unreachable = 1,  ///< the worker could not be reached; it never saw the job
  worker_refused,          ///< the worker answered and refused the job (full, draining)
  worker_lost,             ///< the worker accepted the job and then went away
  ping_timeout,            ///< a ping got no answer within its deadline
  no_matching_worker,      ///< no worker with the required labels became free in time
  unknown_worker,          ///< no worker with that id is registered
  invalid_worker,          ///< a registration lacked an id or address, or had capacity 0
  invalid_job,             ///< a job failed validation (see the accompanying message)
  pool_stopped,            ///< the worker pool was stopped while the call was pending
  source_closed,           ///< the job source will deliver nothing more
  sink_unavailable,        ///< a status could not be made durable
  stop_deadline_exceeded,  ///< a graceful stop had to hand back jobs still running
  duplicate_worker,        ///< a second live process registered with a worker id already in use
};

}  // namespace blacktree::core

template <>
struct std::is_error_code_enum<blacktree::core::errc> : std::true_type {};

namespace blacktree::core {

BLACKTREE_INLINE const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// True when `ec` says the worker never accepted the job, so running it
/// elsewhere cannot run it twice.
inline bool never_accepted(std::error_code ec) noexcept {
  return ec == errc::worker_unreachable || ec == errc::worker_refused;
}

}  // namespace blacktree::core

#ifdef BLACKTREE_HEADER_ONLY
#include <blacktree/core/error-inl.hpp>
#endif
