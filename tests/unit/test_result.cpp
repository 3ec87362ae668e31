// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0

#include <blacktree/core/result.hpp>

#include <blacktree/core/error.hpp>

#include <catch2/catch.hpp>

#include <memory>
#include <string>

namespace core = blacktree::core;
using core::Error;
using core::Result;

namespace {

Result<int> parse_digit(char c) {
  if (c < '0' || c > '9') return Error{core::errc::invalid_job, std::string("not a digit: ") + c};
  return c - '0';
}

Result<void> check_positive(int v) {
  if (v <= 0) return Error{std::make_error_code(std::errc::invalid_argument), ""};
  return {};
}

}  // namespace

TEST_CASE("Result holds a value or an error", "[result]") {
  auto ok = parse_digit('7');
  REQUIRE(ok.has_value());
  REQUIRE(static_cast<bool>(ok));
  CHECK(*ok == 7);
  CHECK(ok.value() == 7);
  CHECK(ok.value_or(-1) == 7);

  auto bad = parse_digit('x');
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code() == core::errc::invalid_job);
  CHECK(bad.error().message() == "not a digit: x");
  CHECK(bad.value_or(-1) == -1);
}

TEST_CASE("Result<void> and an Error's message", "[result]") {
  CHECK(check_positive(1).has_value());
  auto failed = check_positive(0);
  REQUIRE_FALSE(failed);
  // An empty message falls back to the code's own text.
  CHECK(failed.error().message() == std::make_error_code(std::errc::invalid_argument).message());
  CHECK(failed.error().with_context("checking v").message() ==
        "checking v: " + std::make_error_code(std::errc::invalid_argument).message());
  CHECK(failed.error().with_context("checking v").code() == std::errc::invalid_argument);
}

TEST_CASE("Result moves move-only values out", "[result]") {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(3);
  REQUIRE(r);
  std::unique_ptr<int> p = std::move(r).value();
  REQUIRE(p);
  CHECK(*p == 3);
  Result<std::string> s = std::string("text");
  CHECK(s->size() == 4);
}
