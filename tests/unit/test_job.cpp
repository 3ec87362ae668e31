// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/core/job.hpp>

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace core = blacktree::core;

namespace {

struct Spec {
  std::string repo;
  int depth = 0;
};

struct OtherSpec {
  std::string repo;
  int depth = 0;
};

// Counts its live copies, to show that copying a payload shares one value.
struct Tracked {
  explicit Tracked(std::shared_ptr<int> live) : live_(std::move(live)) { ++*live_; }
  Tracked(const Tracked& other) : live_(other.live_) { ++*live_; }
  Tracked& operator=(const Tracked&) = delete;
  ~Tracked() { --*live_; }
  std::shared_ptr<int> live_;
};

}  // namespace

TEST_CASE("Payload: an empty payload holds nothing of any type", "[job][payload]") {
  const core::Payload none;
  CHECK_FALSE(none.has_value());
  CHECK_FALSE(none);
  CHECK(none.get<Spec>() == nullptr);
  CHECK(none.get<std::string>() == nullptr);
  CHECK_FALSE(core::Job{}.payload.has_value());
}

TEST_CASE("Payload: get<T> gives the value for its own type and nullptr for any other", "[job][payload]") {
  const core::Payload payload(Spec{"octo/hello", 1});
  REQUIRE(payload.has_value());
  const Spec* spec = payload.get<Spec>();
  REQUIRE(spec != nullptr);
  CHECK(spec->repo == "octo/hello");
  CHECK(spec->depth == 1);
  CHECK(payload.get<const Spec>() == spec);
  // Same layout, another type: not misread.
  CHECK(payload.get<OtherSpec>() == nullptr);
  CHECK(payload.get<std::string>() == nullptr);
  CHECK(payload.get<int>() == nullptr);
}

TEST_CASE("Payload: make<T> constructs in place", "[job][payload]") {
  const auto payload = core::Payload::make<std::vector<int>>(3u, 7);
  REQUIRE(payload.get<std::vector<int>>() != nullptr);
  CHECK(*payload.get<std::vector<int>>() == std::vector<int>{7, 7, 7});
}

TEST_CASE("Payload: text is held as a std::string that outlives its source", "[job][payload]") {
  core::Payload from_literal("echo hello");
  REQUIRE(from_literal.get<std::string>() != nullptr);
  CHECK(*from_literal.get<std::string>() == "echo hello");
  CHECK(from_literal.get<const char*>() == nullptr);

  core::Payload from_view;
  {
    std::string buffer = "transient";
    from_view = core::Payload(std::string_view(buffer));
    buffer.assign("overwritten");
  }
  REQUIRE(from_view.get<std::string>() != nullptr);
  CHECK(*from_view.get<std::string>() == "transient");
}

TEST_CASE("Payload: copies share one immutable value, released with the last copy", "[job][payload]") {
  auto live = std::make_shared<int>(0);
  {
    core::Job job;
    job.id = "j1";
    job.payload = core::Payload::make<Tracked>(live);
    CHECK(*live == 1);
    const core::Job copy = job;
    core::Job again = copy;
    CHECK(*live == 1);  // copying a job copies a pointer, not the value
    CHECK(again.payload.get<Tracked>() == job.payload.get<Tracked>());
    job.payload = core::Payload();
    CHECK(*live == 1);  // the copies still hold it
    CHECK(job.payload.get<Tracked>() == nullptr);
  }
  CHECK(*live == 0);
}

TEST_CASE("Phase: generic names, and a stage says what a running job does", "[job]") {
  CHECK(core::to_string(core::Phase::accepted) == "accepted");
  CHECK(core::to_string(core::Phase::running) == "running");
  CHECK(core::to_string(core::Phase::finished) == "finished");
  const core::ProgressEvent bare{"j1", "w1", core::Phase::finished, {}};
  CHECK(bare.stage.empty());
  CHECK(bare.line.empty());
  const core::ProgressEvent line{"j1", "w1", core::Phase::running, "cloning", "Cloning into 'src'..."};
  CHECK(line.stage == "cloning");
  CHECK(line.line == "Cloning into 'src'...");
}
