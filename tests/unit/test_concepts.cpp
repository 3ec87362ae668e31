// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// Each concept accepts its in-memory model and rejects a type that lacks any
// one of its required expressions. These are compile-time checks; the test
// case exists so the suite reports them.

#include <blacktree/core/concepts.hpp>
#include <blacktree/core/in_memory.hpp>

#include <catch2/catch.hpp>

namespace core = blacktree::core;

namespace {

struct GoodDelivery {
  const core::Job& job() const { return job_; }
  core::Job job_;
};
struct DeliveryWithoutJob {};
struct ImmovableDelivery {
  ImmovableDelivery() = default;
  ImmovableDelivery(ImmovableDelivery&&) = delete;
  const core::Job& job() const { return job_; }
  core::Job job_;
};
struct DeliveryWithWrongJob {
  int job() const { return 0; }
};

template <bool Receive, bool Ack, bool Reject, class D = GoodDelivery>
struct Source {
  using delivery_type = D;
  template <class H>
  void async_receive(H&&) requires Receive {}
  void ack(D&) requires Ack {}
  void reject(D&, core::Disposition, std::string_view) requires Reject {}
};
struct SourceWithoutDeliveryType {
  template <class H>
  void async_receive(H&&) {}
};

template <bool Run, bool Ping>
struct Transport {
  template <class H>
  void async_run(const core::WorkerInfo&, const core::Job&, core::ProgressCallback, H&&) requires Run {}
  template <class H>
  void async_ping(const core::WorkerInfo&, std::chrono::milliseconds, H&&) requires Ping {}
};
// Ping with the wrong completion signature: the handler cannot take a PingReply.
struct TransportWithWrongPing {
  template <class H>
  void async_run(const core::WorkerInfo&, const core::Job&, core::ProgressCallback, H&&) {}
  template <class H>
  void async_ping(const core::WorkerInfo&, std::chrono::milliseconds, H&& h) requires requires { h(std::error_code{}, 1); } {}
};

// Run whose handler could not take the JobResult.
struct TransportWithWrongRun {
  template <class H>
  void async_run(const core::WorkerInfo&, const core::Job&, core::ProgressCallback, H&& h) requires requires {
    h(std::error_code{});
  } {}
  template <class H>
  void async_ping(const core::WorkerInfo&, std::chrono::milliseconds, H&&) {}
};

// Publish that completes with something else than a bare error code.
struct SinkWithWrongPublish {
  template <class H>
  void async_publish(const core::JobResult&, H&& h) requires requires { h(std::error_code{}, 1); } {}
};

template <bool Publish>
struct Sink {
  template <class H>
  void async_publish(const core::JobResult&, H&&) requires Publish {}
};

}  // namespace

// The archetypes themselves satisfy the concepts...
static_assert(core::Delivery<GoodDelivery>);
static_assert(core::JobSource<Source<true, true, true>>);
static_assert(core::WorkerTransport<Transport<true, true>>);
static_assert(core::StatusSink<Sink<true>>);
// ...the shipped models do...
static_assert(core::JobSource<core::InMemoryQueue>);
static_assert(core::WorkerTransport<core::LoopbackTransport>);
static_assert(core::StatusSink<core::InMemoryStatusSink>);
// ...and removing any one expression is rejected.
static_assert(!core::Delivery<DeliveryWithoutJob>);
static_assert(!core::Delivery<ImmovableDelivery>);
static_assert(!core::Delivery<DeliveryWithWrongJob>);
static_assert(!core::JobSource<Source<false, true, true>>);
static_assert(!core::JobSource<Source<true, false, true>>);
static_assert(!core::JobSource<Source<true, true, false>>);
static_assert(!core::JobSource<Source<true, true, true, DeliveryWithoutJob>>);
static_assert(!core::JobSource<SourceWithoutDeliveryType>);
static_assert(!core::WorkerTransport<Transport<false, true>>);
static_assert(!core::WorkerTransport<Transport<true, false>>);
static_assert(!core::WorkerTransport<TransportWithWrongPing>);
static_assert(!core::WorkerTransport<TransportWithWrongRun>);
static_assert(!core::StatusSink<Sink<false>>);
static_assert(!core::StatusSink<SinkWithWrongPublish>);
static_assert(!core::StatusSink<core::InMemoryQueue>);

TEST_CASE("Concepts: models accepted, a type missing any required expression rejected", "[concepts]") {
  // Everything above is a static_assert; reaching here means all of them held.
  SUCCEED("concept checks passed at compile time");
}

TEST_CASE("Errors: never_accepted separates 'never saw it' from 'lost it'", "[concepts]") {
  CHECK(core::never_accepted(core::errc::worker_unreachable));
  CHECK(core::never_accepted(core::errc::worker_refused));
  CHECK_FALSE(core::never_accepted(core::errc::worker_lost));
  CHECK_FALSE(core::never_accepted(std::make_error_code(std::errc::timed_out)));
  CHECK(std::error_code(core::errc::worker_lost).message() == "worker lost while running the job");
  CHECK(std::string(core::error_category().name()) == "blacktree");
}

TEST_CASE("Values: labels match by subset, secrets never print", "[concepts]") {
  const core::Labels offered{{"region", "eu"}, {"arch", "arm64"}};
  CHECK(core::labels_match({}, offered));
  CHECK(core::labels_match({{"region", "eu"}}, offered));
  CHECK_FALSE(core::labels_match({{"region", "us"}}, offered));
  CHECK_FALSE(core::labels_match({{"gpu", "yes"}}, offered));
  CHECK(core::to_string(offered) == "{arch=arm64, region=eu}");

  core::Secret token("ghp_supersecret");
  std::ostringstream os;
  os << token;
  CHECK(os.str() == "[redacted]");
  CHECK(token.reveal() == "ghp_supersecret");
}
