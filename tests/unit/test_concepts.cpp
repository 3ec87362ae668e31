// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// Each concept accepts its in-memory model and rejects a type that lacks any
// one of its required expressions. These are compile-time checks; the test
// case exists so the suite reports them.

#include <blacktree/core/concepts.hpp>
#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <sstream>
#include <span>
#include <string>
#include <string_view>

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

// A sink that publishes batches, declared or not, spelt right or not.
template <bool Declared>
struct BatchSink : Sink<true> {
  static constexpr bool publishes_batches = Declared;
  template <class H>
  void async_publish_some(std::span<const core::JobResult* const>, H&&) {}
};
struct MisspeltBatchSink : Sink<true> {
  static constexpr bool publishes_batches = true;
  template <class H>
  void async_pubilsh_some(std::span<const core::JobResult* const>, H&&) {}
};

// --- Optional capabilities ---------------------------------------------------
// A source that limits what it takes, spelt right, declared or not.
template <bool Declared>
struct PrefetchSource : Source<true, true, true> {
  static constexpr bool prefetch_control = Declared;
  void set_prefetch(std::size_t) {}
};
// The misspelling the declaration exists to catch: without it the dispatcher
// would find no set_prefetch and take every message the queue holds.
template <bool Declared>
struct MisspeltPrefetchSource : Source<true, true, true> {
  static constexpr bool prefetch_control = Declared;
  void set_prefech(std::size_t) {}
};
struct UndeclaredMisspeltSource : Source<true, true, true> {
  void set_prefech(std::size_t) {}
};
// A type its program cannot change, declared through the trait instead.
struct ThirdPartySource : Source<true, true, true> {
  void set_prefetch_count(std::size_t) {}
};

// A source that hands over batches, spelt right or not, declared or not.
template <bool Declared>
struct BatchSource : Source<true, true, true> {
  static constexpr bool receives_batches = Declared;
  template <class H>
  void async_receive_some(std::size_t, H&&) {}
};
struct MisspeltBatchSource : Source<true, true, true> {
  static constexpr bool receives_batches = true;
  template <class H>
  void async_recieve_some(std::size_t, H&&) {}
};
// Its handler gets one delivery, not a vector of them.
struct WrongBatchSource : Source<true, true, true> {
  static constexpr bool receives_batches = true;
  template <class H>
  void async_receive_some(std::size_t, H&& h) requires requires { h(std::error_code{}, GoodDelivery{}); } {}
};

// A source that hands over what is ready without waiting, declared or not,
// and one whose try_receive_some waits (a handler) instead of returning.
template <bool Declared>
struct ReadySource : Source<true, true, true> {
  static constexpr bool takes_ready = Declared;
  std::vector<GoodDelivery> try_receive_some(std::size_t) { return {}; }
};
struct WaitingReadySource : Source<true, true, true> {
  static constexpr bool takes_ready = true;
  template <class H>
  void try_receive_some(std::size_t, H&&) {}
};

template <bool Declared>
struct InvalidDelivery : GoodDelivery {
  static constexpr bool reports_invalid = Declared;
  std::string_view invalid_reason() const { return {}; }
};
struct MisspeltInvalidDelivery : GoodDelivery {
  static constexpr bool reports_invalid = true;
  std::string_view invalid_reasn() const { return {}; }
};

// What a Dispatcher template accepts: naming it with a source its
// constraints reject is a compile error, so this concept is false.
template <class S>
concept DispatcherAccepts = requires { typename core::Dispatcher<S, core::LoopbackTransport, core::InMemoryStatusSink>; };

// --- LeasePool ---------------------------------------------------------------
template <bool Current, bool Generation>
struct LeaseModel {
  void release() {}
  bool current() const requires Current { return true; }
  std::shared_ptr<const core::WorkerInfo> worker_info() const { return nullptr; }
  std::uint64_t generation() const requires Generation { return 0; }
};
struct SubscriptionModel {
  void reset() {}
};
// The smallest pool a Dispatcher accepts; each flag removes one expression.
template <bool Acquire, bool Subscribe, bool Capacity, bool MarkDead, class L = LeaseModel<true, true>>
struct PoolModel {
  using Lease = L;
  using Subscription = SubscriptionModel;
  template <class H>
  void async_acquire(core::Labels, H&&) requires Acquire {}
  template <class F>
  Subscription subscribe(F&&) requires Subscribe { return {}; }
  std::size_t alive_capacity() const requires Capacity { return 0; }
  void mark_dead(std::string_view, std::string) requires MarkDead {}
};
using GoodPool = PoolModel<true, true, true, true>;

// --- ObservesDispatcher ------------------------------------------------------
struct ProgressObserver : core::DispatcherObserver {
  static constexpr bool wants_progress = true;
  void on_progress(const core::ProgressEvent&) {}
};
// Every hook but on_publish_failed, and not derived from DispatcherObserver.
struct ObserverWithoutPublishFailed {
  static constexpr bool wants_progress = false;
  void on_received(const core::Job&) {}
  void on_assigned(const core::Job&, const core::WorkerInfo&) {}
  void on_not_accepted(const core::Job&, const core::WorkerInfo&, std::error_code, std::string_view) {}
  void on_progress(const core::ProgressEvent&) {}
  void on_finished(const core::Job&, const core::JobResult&) {}
  void on_settled(const core::Job&) {}
  void on_dead_lettered(const core::Job&, std::string_view) {}
  void on_handed_back(const core::Job&) {}
};
struct CompleteObserver : ObserverWithoutPublishFailed {
  void on_publish_failed(const core::Job&, std::error_code) {}
};
// wants_progress must be known at compile time (it decides whether progress is wired).
struct ObserverWithRuntimeFlag : CompleteObserver {
  static inline bool wants_progress = false;
};
struct ObserverWithoutFlag : CompleteObserver {
  int wants_progress = 0;  // a data member, not a constant
};

}  // namespace

template <>
struct core::job_source_traits<ThirdPartySource> {
  static constexpr bool prefetch_control = true;
};

// Optional capabilities: found by their expressions, required once declared.
static_assert(core::PrefetchControl<PrefetchSource<false>>);
static_assert(core::JobSource<PrefetchSource<false>>);
static_assert(core::JobSource<PrefetchSource<true>>);
static_assert(core::JobSource<core::InMemoryQueue> && core::PrefetchControl<core::InMemoryQueue> &&
              core::job_source_traits<core::InMemoryQueue>::prefetch_control);
static_assert(!core::PrefetchControl<MisspeltPrefetchSource<true>>);
static_assert(!core::JobSource<MisspeltPrefetchSource<true>>);      // declared, misspelt: rejected
static_assert(core::JobSource<MisspeltPrefetchSource<false>>);      // declared absent: accepted
static_assert(core::JobSource<UndeclaredMisspeltSource>);           // undeclared: optional, so accepted...
static_assert(!core::PrefetchControl<UndeclaredMisspeltSource>);    // ...and the dispatcher will not call it
static_assert(!core::JobSource<ThirdPartySource>);                  // declared through the trait
static_assert(core::ReceivesBatches<BatchSource<false>> && core::JobSource<BatchSource<false>>);
static_assert(core::JobSource<BatchSource<true>>);
static_assert(!core::JobSource<MisspeltBatchSource>);               // declared, misspelt: rejected
static_assert(!core::ReceivesBatches<WrongBatchSource> && !core::JobSource<WrongBatchSource>);
static_assert(core::ReceivesBatches<core::InMemoryQueue> &&
              core::job_source_traits<core::InMemoryQueue>::receives_batches);
static_assert(core::SettlesBatches<core::InMemoryQueue> && !core::SettlesBatches<Source<true, true, true>>);
static_assert(core::TakesReady<ReadySource<false>> && core::JobSource<ReadySource<false>>);
static_assert(core::JobSource<ReadySource<true>>);
static_assert(!core::TakesReady<WaitingReadySource> && !core::JobSource<WaitingReadySource>);
static_assert(core::TakesReady<core::InMemoryQueue> && core::job_source_traits<core::InMemoryQueue>::takes_ready);

static_assert(core::ReportsInvalid<InvalidDelivery<false>> && core::Delivery<InvalidDelivery<false>>);
static_assert(core::Delivery<InvalidDelivery<true>>);
static_assert(core::ReportsInvalid<core::InMemoryQueue::Delivery> &&
              core::delivery_traits<core::InMemoryQueue::Delivery>::reports_invalid);
static_assert(!core::Delivery<MisspeltInvalidDelivery>);
static_assert(!core::JobSource<Source<true, true, true, MisspeltInvalidDelivery>>);
// Acceptance reports are a declaration: the loopback transport makes it, a bare one does not.
static_assert(core::worker_transport_traits<core::LoopbackTransport>::reports_accepted);
static_assert(!core::worker_transport_traits<int>::reports_accepted);
// Where it matters: the Dispatcher refuses such a source at compile time.
static_assert(DispatcherAccepts<core::InMemoryQueue>);
static_assert(DispatcherAccepts<PrefetchSource<true>>);
static_assert(!DispatcherAccepts<MisspeltPrefetchSource<true>>);
static_assert(!DispatcherAccepts<MisspeltBatchSource>);
static_assert(!DispatcherAccepts<Source<true, true, true, MisspeltInvalidDelivery>>);

// LeasePool: the shipped pools and the archetype pass; each missing expression fails.
static_assert(core::LeasePool<core::WorkerPool>);
static_assert(core::LeasePool<core::WorkerPoolSt>);
static_assert(core::LeasePool<GoodPool>);
static_assert(!core::LeasePool<PoolModel<false, true, true, true>>);
static_assert(!core::LeasePool<PoolModel<true, false, true, true>>);
static_assert(!core::LeasePool<PoolModel<true, true, false, true>>);
static_assert(!core::LeasePool<PoolModel<true, true, true, false>>);
static_assert(!core::LeasePool<PoolModel<true, true, true, true, LeaseModel<false, true>>>);
static_assert(!core::LeasePool<PoolModel<true, true, true, true, LeaseModel<true, false>>>);
static_assert(!core::LeasePool<core::InMemoryQueue>);

// ObservesDispatcher
static_assert(core::ObservesDispatcher<core::DispatcherObserver>);
static_assert(core::ObservesDispatcher<ProgressObserver>);
static_assert(core::ObservesDispatcher<CompleteObserver>);
static_assert(!core::ObservesDispatcher<ObserverWithoutPublishFailed>);
static_assert(!core::ObservesDispatcher<ObserverWithRuntimeFlag>);
static_assert(!core::ObservesDispatcher<ObserverWithoutFlag>);
static_assert(!core::ObservesDispatcher<int>);

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
// Batches of statuses: found by the expression, required once declared.
static_assert(core::PublishesBatches<BatchSink<false>> && core::StatusSink<BatchSink<false>>);
static_assert(core::StatusSink<BatchSink<true>>);
static_assert(!core::StatusSink<MisspeltBatchSink> && !core::PublishesBatches<Sink<true>>);
static_assert(core::PublishesBatches<core::InMemoryStatusSink> &&
              core::status_sink_traits<core::InMemoryStatusSink>::publishes_batches);

TEST_CASE("Concepts: models accepted, a type missing any required expression rejected", "[concepts]") {
  // Including a source that declares set_prefetch and misspells it, a pool
  // without mark_dead and an observer without on_publish_failed.
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
