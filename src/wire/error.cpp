// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/wire/error.hpp>

#include <string>

namespace blacktree::wire {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "blacktree.wire"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::invalid_json: return "invalid JSON for the message";
    }
    return "unknown blacktree.wire error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  // A category must be one object for error_code comparison to work; it holds no state.
  static const Category category;
  return category;
}

}  // namespace blacktree::wire
