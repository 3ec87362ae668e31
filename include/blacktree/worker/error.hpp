// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <system_error>

namespace blacktree::worker {

/// What went wrong in the worker library. The core::Error carrying one holds
/// the message a person acts on ("branch: must not start with '-'").
enum class errc {
  invalid_field = 1,  ///< a job's field breaks a rule; the message names the field and the rule
  misconfigured,      ///< the worker's own configuration cannot work (no registry, bad credentials setting)
  tool_unavailable,   ///< a program the worker runs is missing, or its engine unreachable
  io_failed,          ///< a file or directory could not be created, written or read
  no_digest,          ///< a push reported no manifest digest
  no_credentials,     ///< a credential helper gave no usable credentials
};

}  // namespace blacktree::worker

template <>
struct std::is_error_code_enum<blacktree::worker::errc> : std::true_type {};

namespace blacktree::worker {

/// The category of worker::errc ("blacktree.worker").
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace blacktree::worker
