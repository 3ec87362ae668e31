// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The one way blacktree (and an embedder, if it likes) defines the
// std::error_category of an error enum: a name and a function that describes
// each value. The core, amqp, grpc, wire and worker categories are all this.
//
//   std::string_view describe(errc e) noexcept { switch (e) { case errc::x: return "..."; } return {}; }
//   const std::error_category& error_category() noexcept {
//     static const core::EnumErrorCategory<errc> category("blacktree.x", describe);
//     return category;  // one object per program: define this in one .cpp (or -inl.hpp)
//   }

#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace blacktree::core {

template <class Enum>
  requires std::is_enum_v<Enum>
class EnumErrorCategory final : public std::error_category {
 public:
  /// `describe` returns the text of a value, or an empty view for a value it does not know.
  using Describe = std::string_view (*)(Enum) noexcept;

  EnumErrorCategory(const char* name, Describe describe) noexcept : name_(name), describe_(describe) {}

  const char* name() const noexcept override { return name_; }

  std::string message(int value) const override {
    const std::string_view text = describe_(static_cast<Enum>(value));
    if (!text.empty()) return std::string(text);
    return "unknown " + std::string(name_) + " error " + std::to_string(value);
  }

 private:
  const char* name_;
  Describe describe_;
};

}  // namespace blacktree::core
