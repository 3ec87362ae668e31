// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// blacktree's one error convention for fallible functions outside the async
// operations (which report a std::error_code to their completion handler):
//
//   core::Result<T>     a T, or an Error
//   core::Result<void>  nothing, or an Error
//   core::Error         a std::error_code to branch on (each adapter has its
//                       own category) and a message a person can act on
//
// The shape is std::expected's (has_value, value, error, operator*, ->), so
// code written against it moves to std::expected with C++23 by renaming.
// Nothing here throws: reading the value of a failed Result is a bug, caught by
// an assertion in debug builds.

#include <cassert>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace blacktree::core {

/// What went wrong: `code()` for a program, `message()` for a person.
class Error {
 public:
  Error() = default;
  /// `message` says what failed and what to do; empty means the code's own text.
  Error(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}
  template <class Enum>
    requires std::is_error_code_enum_v<Enum>
  Error(Enum e, std::string message) : Error(make_error_code(e), std::move(message)) {}

  const std::error_code& code() const noexcept { return code_; }
  /// The text for a person: the message given, or the code's own text.
  std::string message() const { return message_.empty() ? code_.message() : message_; }

  /// The same error, with `context` in front ("reading /etc/x.yaml: " + message).
  Error with_context(std::string_view context) const {
    return {code_, std::string(context) + ": " + message()};
  }

  friend bool operator==(const Error& a, const Error& b) noexcept {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  std::error_code code_;
  std::string message_;
};

/// A T or an Error. An Error converts to it implicitly, so a function says
/// `return Error{errc::x, "..."};` or `return value;`.
template <class T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::remove_cv_t<T>, Error>, "Result<Error> is ambiguous");
  static_assert(!std::is_reference_v<T>, "Result holds values");

 public:
  using value_type = T;

  template <class U = T>
    requires std::is_constructible_v<T, U&&> && (!std::is_same_v<std::remove_cvref_t<U>, Result>) &&
             (!std::is_same_v<std::remove_cvref_t<U>, Error>)
  Result(U&& value) : state_(std::in_place_index<0>, std::forward<U>(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}      // NOLINT(google-explicit-constructor)

  bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & noexcept { return checked_value(); }
  const T& value() const& noexcept { return const_cast<Result*>(this)->checked_value(); }
  T&& value() && noexcept { return std::move(checked_value()); }
  T& operator*() & noexcept { return checked_value(); }
  const T& operator*() const& noexcept { return value(); }
  T&& operator*() && noexcept { return std::move(checked_value()); }
  T* operator->() noexcept { return &checked_value(); }
  const T* operator->() const noexcept { return &value(); }

  template <class U>
  T value_or(U&& fallback) const& {
    return has_value() ? value() : static_cast<T>(std::forward<U>(fallback));
  }

  const Error& error() const& noexcept {
    assert(!has_value() && "error() of a Result that holds a value");
    return std::get<1>(state_);
  }
  Error&& error() && noexcept {
    assert(!has_value() && "error() of a Result that holds a value");
    return std::get<1>(std::move(state_));
  }

 private:
  T& checked_value() noexcept {
    assert(has_value() && "value() of a failed Result");
    return *std::get_if<0>(&state_);
  }

  std::variant<T, Error> state_;
};

/// Success, or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  using value_type = void;

  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT(google-explicit-constructor)

  bool has_value() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return has_value(); }
  void value() const noexcept { assert(has_value() && "value() of a failed Result"); }

  const Error& error() const& noexcept {
    assert(failed_ && "error() of a Result that succeeded");
    return error_;
  }
  Error&& error() && noexcept {
    assert(failed_ && "error() of a Result that succeeded");
    return std::move(error_);
  }

 private:
  Error error_;
  bool failed_ = false;
};

}  // namespace blacktree::core
