// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/grpc/error.hpp>

#include <blacktree/core/error_category.hpp>

namespace blacktree::grpc {
namespace {

std::string_view describe(errc e) noexcept {
  switch (e) {
    case errc::unavailable: return "peer unavailable";
    case errc::deadline_exceeded: return "call deadline exceeded";
    case errc::unauthenticated: return "credentials refused";
    case errc::rejected: return "request rejected";
    case errc::call_failed: return "gRPC call failed";
    case errc::drain_deadline_exceeded: return "drain deadline exceeded; running jobs cancelled";
    case errc::jobs_still_running: return "cancelled jobs still running";
    case errc::invalid_credentials: return "credentials unusable";
  }
  return {};
}

}  // namespace

const std::error_category& error_category() noexcept {
  // One object for the program, so that error_codes compare equal; it holds no state.
  static const core::EnumErrorCategory<errc> category("blacktree.grpc", describe);
  return category;
}

}  // namespace blacktree::grpc
