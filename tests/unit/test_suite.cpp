// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// Checks on the test suite itself. ctest runs each TEST_CASE by passing its
// name back to this binary as a Catch2 test spec (catch_discover_tests), and a
// name that does not survive that round trip silently turns into a broken or
// empty ctest entry: a ';' splits the discovered list in two, a leading or
// trailing blank is trimmed away. And a test that may fail hides a bug.

// TestSpecParser and the tag alias registry are "external interfaces" in Catch2 v2.
#define CATCH_CONFIG_EXTERNAL_INTERFACES
#include <catch2/catch.hpp>

#include <string>

namespace {

// What CatchAddTests.cmake (Catch2 v2.13) does to a name before passing it as
// the test spec.
std::string as_discovered_spec(std::string name) {
  std::string out;
  for (char c : name) {
    if (c == ',' || c == '[' || c == ']') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

TEST_CASE("Suite: every test case is selected exactly by the spec ctest runs it with", "[suite]") {
  const auto& tests = Catch::getRegistryHub().getTestCaseRegistry().getAllTests();
  REQUIRE_FALSE(tests.empty());
  for (const auto& test : tests) {
    const auto& info = test.getTestCaseInfo();
    CAPTURE(info.name);
    CHECK(info.name.find(';') == std::string::npos);
    REQUIRE_FALSE(info.name.empty());
    CHECK(info.name.front() != ' ');
    CHECK(info.name.back() != ' ');
    CHECK_FALSE(info.okToFail());  // [!mayfail] / [!shouldfail]: fix the bug instead

    const auto spec = Catch::TestSpecParser(Catch::ITagAliasRegistry::get()).parse(as_discovered_spec(info.name)).testSpec();
    std::size_t selected = 0;
    for (const auto& other : tests) selected += spec.matches(other.getTestCaseInfo()) ? 1 : 0;
    CHECK(selected == 1);
    CHECK(spec.matches(info));
  }
}
