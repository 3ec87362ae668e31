// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/wire/error.hpp>

#include <blacktree/core/error_category.hpp>

namespace blacktree::wire {
namespace {

std::string_view describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_json: return "invalid JSON for the message";
    case errc::missing_field: return "a required field of the message is missing";
    case errc::invalid_field: return "a field of the message breaks its rule";
  }
  return {};
}

}  // namespace

const std::error_category& error_category() noexcept {
  // One object for the program, so that error_codes compare equal; it holds no state.
  static const core::EnumErrorCategory<errc> category("blacktree.wire", describe);
  return category;
}

}  // namespace blacktree::wire
