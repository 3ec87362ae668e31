// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The error codes of blacktree::grpc, for the core::Result its fallible
// functions return (registration, deregistration, a worker's shutdown). The
// transport's async operations report the core's own codes
// (core::errc::worker_unreachable, ...), which the dispatcher branches on.

#include <string>
#include <system_error>

namespace blacktree::grpc {

enum class errc {
  unavailable = 1,          ///< the peer could not be reached (not listening, network down, name not found)
  deadline_exceeded,        ///< the call got no answer within its deadline
  unauthenticated,          ///< the peer refused our credentials (no token, or the wrong one)
  rejected,                 ///< the peer answered and refused the request (invalid, unknown, not now)
  call_failed,              ///< any other gRPC failure
  drain_deadline_exceeded,  ///< a shutdown cancelled jobs still running at its drain deadline
  jobs_still_running,       ///< cancelled jobs had not ended when a shutdown gave up waiting
  invalid_credentials,      ///< TLS files missing, unreadable or not PEM; or no authentication at all without --insecure
};

}  // namespace blacktree::grpc

template <>
struct std::is_error_code_enum<blacktree::grpc::errc> : std::true_type {};

namespace blacktree::grpc {

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace blacktree::grpc
