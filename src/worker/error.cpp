// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/error.hpp>

#include <string>

namespace blacktree::worker {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "blacktree.worker"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::invalid_field: return "invalid job field";
      case errc::misconfigured: return "worker misconfigured";
      case errc::tool_unavailable: return "tool unavailable";
      case errc::io_failed: return "file system operation failed";
      case errc::no_digest: return "push reported no digest";
      case errc::no_credentials: return "no registry credentials";
    }
    return "unknown blacktree.worker error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  // A category must be one object for error_code comparison to work; it holds no state.
  static const Category category;
  return category;
}

}  // namespace blacktree::worker
