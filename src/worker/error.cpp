// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/error.hpp>

#include <blacktree/core/error_category.hpp>

namespace blacktree::worker {
namespace {

std::string_view describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_field: return "invalid job field";
    case errc::misconfigured: return "worker misconfigured";
    case errc::tool_unavailable: return "tool unavailable";
    case errc::io_failed: return "file system operation failed";
    case errc::no_digest: return "push reported no digest";
    case errc::no_credentials: return "no registry credentials";
  }
  return {};
}

}  // namespace

const std::error_category& error_category() noexcept {
  // One object for the program, so that error_codes compare equal; it holds no state.
  static const core::EnumErrorCategory<errc> category("blacktree.worker", describe);
  return category;
}

}  // namespace blacktree::worker
