// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Internal to blacktree::grpc: a failed gRPC status as the library's one error
// convention (core::Error with a blacktree::grpc::errc).

#include <blacktree/core/result.hpp>
#include <blacktree/grpc/error.hpp>

#include <fmt/format.h>
#include <grpcpp/support/status.h>

#include <string>
#include <utility>

namespace blacktree::grpc::detail {

inline errc errc_of(::grpc::StatusCode code) noexcept {
  switch (code) {
    case ::grpc::StatusCode::UNAVAILABLE: return errc::unavailable;
    case ::grpc::StatusCode::DEADLINE_EXCEEDED: return errc::deadline_exceeded;
    case ::grpc::StatusCode::UNAUTHENTICATED:
    case ::grpc::StatusCode::PERMISSION_DENIED: return errc::unauthenticated;
    case ::grpc::StatusCode::INVALID_ARGUMENT:
    case ::grpc::StatusCode::NOT_FOUND:
    case ::grpc::StatusCode::ALREADY_EXISTS:
    case ::grpc::StatusCode::FAILED_PRECONDITION:
    case ::grpc::StatusCode::RESOURCE_EXHAUSTED:
    case ::grpc::StatusCode::OUT_OF_RANGE: return errc::rejected;
    default: return errc::call_failed;
  }
}

/// Success for an OK status; otherwise the peer's message (or the status
/// number when it sent none), which is what a person can act on.
inline core::Result<void> to_result(const ::grpc::Status& status) {
  if (status.ok()) return {};
  std::string message = status.error_message();
  if (message.empty()) message = fmt::format("gRPC status {}", static_cast<int>(status.error_code()));
  return core::Error{errc_of(status.error_code()), std::move(message)};
}

}  // namespace blacktree::grpc::detail
