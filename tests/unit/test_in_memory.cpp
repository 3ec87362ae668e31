// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0

#include <blacktree/core/in_memory.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../support/test_support.hpp"

namespace core = blacktree::core;
using namespace std::chrono_literals;
using blacktree::test::make_job;
using blacktree::test::make_worker;
using blacktree::test::run_ready;
using blacktree::test::run_until;
using core::InMemoryQueue;
using core::InMemoryStatusSink;
using core::LoopbackTransport;
using Mode = LoopbackTransport::Mode;

namespace {

// ---------------------------------------------------------------------------
// InMemoryQueue helpers

struct Received {
  bool done = false;
  std::error_code ec;
  InMemoryQueue::Delivery delivery;
};

auto record_into(const std::shared_ptr<Received>& r) {
  return [r](std::error_code ec, InMemoryQueue::Delivery d) {
    r->done = true;
    r->ec = ec;
    r->delivery = std::move(d);
  };
}

std::shared_ptr<Received> receive(InMemoryQueue& queue) {
  auto r = std::make_shared<Received>();
  queue.async_receive(record_into(r));
  return r;
}

// Receives one delivery, waiting for it; fails the test if none comes.
InMemoryQueue::Delivery take(asio::io_context& io, InMemoryQueue& queue) {
  auto r = receive(queue);
  REQUIRE(run_until(io, [&] { return r->done; }, 2s));
  REQUIRE_FALSE(r->ec);
  return std::move(r->delivery);
}

// ---------------------------------------------------------------------------
// LoopbackTransport helpers

struct RunOutcome {
  bool done = false;
  std::error_code ec;
  core::JobResult result;
};

auto record_into(const std::shared_ptr<RunOutcome>& o) {
  return [o](std::error_code ec, core::JobResult result) {
    o->done = true;
    o->ec = ec;
    o->result = std::move(result);
  };
}

std::shared_ptr<RunOutcome> run(LoopbackTransport& t, const core::WorkerInfo& w, const core::Job& j,
                                core::ProgressCallback progress = {}) {
  auto o = std::make_shared<RunOutcome>();
  t.async_run(w, j, std::move(progress), record_into(o));
  return o;
}

// A runner that keeps every call until the test settles it.
struct HeldCalls {
  std::mutex mutex;
  std::vector<LoopbackTransport::Call> calls;

  LoopbackTransport::Runner runner() {
    return [this](LoopbackTransport::Call call) {
      std::lock_guard lock(mutex);
      calls.push_back(std::move(call));
    };
  }
  std::size_t size() {
    std::lock_guard lock(mutex);
    return calls.size();
  }
  LoopbackTransport::Call at(std::size_t i) {
    std::lock_guard lock(mutex);
    return calls.at(i);
  }
};

struct PingOutcome {
  bool done = false;
  int completions = 0;
  std::error_code ec;
  core::PingReply reply;
};

// `slot`: where a test may cancel the ping; by default nobody can.
std::shared_ptr<PingOutcome> ping(LoopbackTransport& t, const core::WorkerInfo& w, std::chrono::milliseconds deadline,
                                  asio::cancellation_slot slot = {}) {
  auto o = std::make_shared<PingOutcome>();
  t.async_ping(w, deadline, asio::bind_cancellation_slot(slot, [o](std::error_code ec, core::PingReply reply) {
                 o->done = true;
                 ++o->completions;
                 o->ec = ec;
                 o->reply = std::move(reply);
               }));
  return o;
}

struct Published {
  bool done = false;
  std::error_code ec;
};

std::shared_ptr<Published> publish(InMemoryStatusSink& sink, const std::string& id) {
  auto p = std::make_shared<Published>();
  core::JobResult r;
  r.job_id = id;
  r.success = true;
  sink.async_publish(r, [p](std::error_code ec) {
    p->done = true;
    p->ec = ec;
  });
  return p;
}

}  // namespace

// ===========================================================================
// InMemoryQueue

TEST_CASE("InMemoryQueue: delivers in FIFO order and never from inside the initiating call", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  for (const char* id : {"a", "b", "c"}) queue.publish(make_job(id));
  REQUIRE(queue.ready() == 3);

  auto first = receive(queue);
  CHECK_FALSE(first->done);  // a message was ready, yet the handler is posted, not run inline
  run_ready(io);
  REQUIRE(first->done);
  CHECK(first->delivery.job().id == "a");
  CHECK_FALSE(first->delivery.job().redelivered);
  auto b = take(io, queue);
  auto c = take(io, queue);
  CHECK(b.job().id == "b");
  CHECK(c.job().id == "c");
  CHECK(queue.ready() == 0);
  CHECK(queue.unacked() == 3);
}

TEST_CASE("InMemoryQueue: a waiting receive gets a later publish and waiters are served in order",
          "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  auto r1 = receive(queue);
  auto r2 = receive(queue);
  run_ready(io);
  CHECK_FALSE(r1->done);  // nothing published: it waits
  CHECK_FALSE(r2->done);

  queue.publish(make_job("x"));
  CHECK_FALSE(r1->done);  // completed by publish, but posted, not run inside publish()
  run_ready(io);
  REQUIRE(r1->done);
  CHECK_FALSE(r1->ec);
  CHECK(r1->delivery.job().id == "x");
  CHECK_FALSE(r2->done);
  CHECK(queue.ready() == 0);
  CHECK(queue.unacked() == 1);

  queue.publish(make_job("y"));
  REQUIRE(run_until(io, [&] { return r2->done; }, 2s));
  CHECK(r2->delivery.job().id == "y");
}

TEST_CASE("InMemoryQueue: ack removes a message for good and counts track unsettled deliveries", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  for (const char* id : {"a", "b", "c"}) queue.publish(make_job(id));

  auto a = take(io, queue);
  auto b = take(io, queue);
  auto c = take(io, queue);
  CHECK(queue.unacked() == 3);
  CHECK(queue.max_unacked() == 3);

  queue.ack(a);
  CHECK(queue.unacked() == 2);
  CHECK(queue.acked() == 1);
  queue.ack(a);  // settling twice does nothing
  CHECK(queue.unacked() == 2);
  CHECK(queue.acked() == 1);

  queue.ack(b);
  queue.ack(c);
  CHECK(queue.unacked() == 0);
  CHECK(queue.max_unacked() == 3);  // the high-water mark stays
  CHECK(queue.acked() == 3);
  CHECK(queue.ready() == 0);
  CHECK(queue.dead_letters().empty());

  // Nothing comes back: a receive now waits.
  auto r = receive(queue);
  run_ready(io);
  CHECK_FALSE(r->done);

  queue.set_prefetch(4);
  CHECK(queue.prefetch() == 4);
}

TEST_CASE("InMemoryQueue: reject(requeue) redelivers the job marked redelivered", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  auto job = make_job("j1", {{"region", "eu"}});
  job.payload = core::Payload(std::string("bytes"));
  queue.publish(job);

  auto d = take(io, queue);
  CHECK_FALSE(d.job().redelivered);
  queue.reject(d, core::Disposition::requeue, "worker unreachable");
  CHECK(queue.unacked() == 0);
  CHECK(queue.ready() == 1);
  CHECK(queue.dead_letters().empty());

  auto again = take(io, queue);
  CHECK(again.job().id == "j1");
  CHECK(again.job().redelivered);
  REQUIRE(again.job().payload.get<std::string>());
  CHECK(*again.job().payload.get<std::string>() == "bytes");
  CHECK(again.job().required_labels == core::Labels{{"region", "eu"}});
  queue.ack(again);
  CHECK(queue.acked() == 1);
}

TEST_CASE("InMemoryQueue: reject(dead_letter) parks the job with its reason", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  queue.publish(make_job("bad"));
  queue.publish(make_job("good"));

  auto d = take(io, queue);
  queue.reject(d, core::Disposition::dead_letter, "imageName is empty");
  CHECK(queue.unacked() == 0);
  const auto parked = queue.dead_letters();
  REQUIRE(parked.size() == 1);
  CHECK(parked[0].job.id == "bad");
  CHECK(parked[0].reason == "imageName is empty");

  // It is not delivered again: the next delivery is the other job, then nothing.
  auto good = take(io, queue);
  CHECK(good.job().id == "good");
  queue.ack(good);
  auto r = receive(queue);
  run_ready(io);
  CHECK_FALSE(r->done);
}

TEST_CASE("InMemoryQueue: a delivery dropped unsettled is redelivered", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  queue.publish(make_job("j1"));

  SECTION("destroyed") {
    { auto d = take(io, queue); }
  }
  SECTION("overwritten by move-assignment") {
    auto d = take(io, queue);
    d = InMemoryQueue::Delivery{};
  }
  CHECK(queue.unacked() == 0);
  CHECK(queue.ready() == 1);

  auto again = take(io, queue);
  CHECK(again.job().id == "j1");
  CHECK(again.job().redelivered);
  queue.ack(again);
  CHECK(queue.ready() == 0);
}

TEST_CASE("InMemoryQueue: moving a delivery moves the duty to settle it", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  queue.publish(make_job("j1"));

  auto d = take(io, queue);
  std::optional<InMemoryQueue::Delivery> holder(std::move(d));
  { auto moved_from = std::move(d); }  // empty: hands nothing back
  CHECK(queue.ready() == 0);
  CHECK(queue.unacked() == 1);
  queue.ack(*holder);
  holder.reset();  // settled: hands nothing back either
  CHECK(queue.ready() == 0);
  CHECK(queue.unacked() == 0);
  CHECK(queue.acked() == 1);
}

TEST_CASE("InMemoryQueue: a pending receive is cancelled through its cancellation slot", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  asio::cancellation_signal signal;
  auto r = std::make_shared<Received>();
  queue.async_receive(asio::bind_cancellation_slot(signal.slot(), record_into(r)));
  run_ready(io);
  REQUIRE_FALSE(r->done);

  signal.emit(asio::cancellation_type::terminal);
  CHECK_FALSE(r->done);  // not run inside emit() either
  REQUIRE(run_until(io, [&] { return r->done; }, 2s));
  CHECK(r->ec == asio::error::operation_aborted);

  // The cancelled receiver takes nothing: a later message waits for the next receive.
  queue.publish(make_job("j1"));
  run_ready(io);
  CHECK(queue.ready() == 1);
  CHECK(queue.unacked() == 0);
  auto d = take(io, queue);
  CHECK(d.job().id == "j1");
}

TEST_CASE("InMemoryQueue: cancelling after delivery changes nothing", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  asio::cancellation_signal signal;
  auto r = std::make_shared<Received>();
  queue.async_receive(asio::bind_cancellation_slot(signal.slot(), record_into(r)));
  queue.publish(make_job("j1"));
  REQUIRE(run_until(io, [&] { return r->done; }, 2s));
  REQUIRE_FALSE(r->ec);

  signal.emit(asio::cancellation_type::terminal);
  run_ready(io);
  CHECK(r->delivery.job().id == "j1");
  CHECK(queue.unacked() == 1);
}

TEST_CASE("InMemoryQueue: close fails pending and later receives with source_closed", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  auto pending = receive(queue);
  run_ready(io);
  REQUIRE_FALSE(pending->done);

  queue.close();
  CHECK_FALSE(pending->done);  // posted, not run inside close()
  REQUIRE(run_until(io, [&] { return pending->done; }, 2s));
  CHECK(pending->ec == core::errc::source_closed);

  queue.publish(make_job("late"));
  auto later = receive(queue);
  REQUIRE(run_until(io, [&] { return later->done; }, 2s));
  CHECK(later->ec == core::errc::source_closed);
  CHECK(queue.unacked() == 0);
}

TEST_CASE("InMemoryQueue: an invalid message is delivered with its reason", "[in_memory][queue]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  queue.publish_invalid(make_job(""), "not JSON: unexpected '}' at offset 17");
  queue.publish(make_job("ok"));

  auto bad = take(io, queue);
  CHECK(bad.invalid_reason() == "not JSON: unexpected '}' at offset 17");
  CHECK(bad.job().id.empty());
  queue.reject(bad, core::Disposition::dead_letter, bad.invalid_reason());
  REQUIRE(queue.dead_letters().size() == 1);
  CHECK(queue.dead_letters()[0].reason == "not JSON: unexpected '}' at offset 17");

  auto good = take(io, queue);
  CHECK(good.invalid_reason().empty());
}

TEST_CASE("InMemoryQueue: concurrent publishers and receivers deliver every message once", "[in_memory][queue][threads]") {
  asio::io_context io;
  InMemoryQueue queue(io.get_executor());
  std::mutex mutex;
  std::condition_variable all_seen;
  std::multiset<std::string> seen;
  std::atomic<int> closed_receivers{0};
  constexpr int publishers = 4;
  constexpr int per_publisher = 250;
  constexpr int receivers = 4;

  // Each receiver acks what it gets, drops every 7th unsettled (so it comes back), and receives again.
  struct Consumer {
    InMemoryQueue& queue;
    std::mutex& mutex;
    std::condition_variable& all_seen;
    std::multiset<std::string>& seen;
    std::atomic<int>& closed;
    int got = 0;
    void next(std::shared_ptr<Consumer> self) {
      queue.async_receive([self](std::error_code ec, InMemoryQueue::Delivery d) {
        if (ec) {
          ++self->closed;
          return;
        }
        if (++self->got % 7 != 0) {
          self->queue.ack(d);
          std::lock_guard lock(self->mutex);
          self->seen.insert(d.job().id);
          self->all_seen.notify_all();
        } else {
          InMemoryQueue::Delivery dropped = std::move(d);  // handed back before receiving again
        }
        self->next(self);
      });
    }
  };
  for (int i = 0; i < receivers; ++i) {
    auto c = std::make_shared<Consumer>(Consumer{queue, mutex, all_seen, seen, closed_receivers});
    c->next(c);
  }

  std::vector<std::thread> io_threads;
  for (int i = 0; i < 3; ++i) io_threads.emplace_back([&] { io.run(); });
  std::vector<std::thread> producers;
  for (int p = 0; p < publishers; ++p)
    producers.emplace_back([&, p] {
      for (int i = 0; i < per_publisher; ++i) queue.publish(make_job(std::to_string(p) + "-" + std::to_string(i)));
    });
  for (auto& t : producers) t.join();

  constexpr std::size_t total = publishers * per_publisher;
  bool all_acked = false;
  {
    // The io threads do the work; this one waits for them.
    std::unique_lock lock(mutex);
    all_acked = all_seen.wait_for(lock, 4s, [&] { return seen.size() >= total; });
  }
  queue.close();  // ends the receive loops, so the io threads run out of work
  for (auto& t : io_threads) t.join();
  REQUIRE(all_acked);
  CHECK(queue.acked() == total);

  CHECK(closed_receivers == receivers);
  CHECK(queue.unacked() == 0);
  CHECK(queue.ready() == 0);
  CHECK(queue.max_unacked() <= static_cast<std::size_t>(receivers));
  REQUIRE(seen.size() == total);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == total);  // each acked exactly once
}

// ===========================================================================
// LoopbackTransport

TEST_CASE("LoopbackTransport: the default runner succeeds with job and worker ids filled in",
          "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  auto w = make_worker("w1");
  transport.add_endpoint(w.address, 1);
  const auto job = make_job("j1");

  auto o = run(transport, w, job);
  CHECK_FALSE(o->done);  // never inline
  REQUIRE(run_until(io, [&] { return o->done; }, 2s));
  CHECK_FALSE(o->ec);
  CHECK(o->result.success);
  CHECK(o->result.job_id == "j1");
  CHECK(o->result.worker_id == "w1");
  CHECK(o->result.error.empty());
  CHECK(transport.running(w.address) == 0);
  CHECK(transport.runs_started(w.address) == 1);
}

TEST_CASE("LoopbackTransport: a full endpoint refuses more jobs than its capacity", "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  HeldCalls held;
  auto w = make_worker("w1", 2);
  transport.add_endpoint(w.address, 2, held.runner());
  const auto j1 = make_job("j1"), j2 = make_job("j2"), j3 = make_job("j3"), j4 = make_job("j4");

  auto o1 = run(transport, w, j1);
  auto o2 = run(transport, w, j2);
  auto o3 = run(transport, w, j3);
  REQUIRE(run_until(io, [&] { return held.size() == 2 && o3->done; }, 2s));
  CHECK(o3->ec == core::errc::worker_refused);
  CHECK(core::never_accepted(o3->ec));
  CHECK_THAT(o3->result.error, Catch::Contains("full"));
  CHECK(transport.running(w.address) == 2);
  CHECK(transport.runs_started(w.address) == 2);
  CHECK_FALSE(o1->done);
  CHECK_FALSE(o2->done);

  // A finished run frees its slot.
  CHECK(held.at(0).job().id == "j1");
  REQUIRE(held.at(0).complete(core::JobResult{}));
  REQUIRE(run_until(io, [&] { return o1->done; }, 2s));
  CHECK_FALSE(o1->ec);
  CHECK(o1->result.job_id == "j1");
  CHECK(transport.running(w.address) == 1);
  auto o4 = run(transport, w, j4);
  REQUIRE(run_until(io, [&] { return held.size() == 3; }, 2s));
  CHECK_FALSE(o4->done);
  CHECK(transport.running(w.address) == 2);

  REQUIRE(held.at(1).complete(core::JobResult{}));
  REQUIRE(held.at(2).complete(core::JobResult{}));
  REQUIRE(run_until(io, [&] { return o2->done && o4->done; }, 2s));
}

TEST_CASE("LoopbackTransport: an unknown or unreachable address is worker_unreachable", "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  auto w = make_worker("w1");
  const auto job = make_job("j1");

  SECTION("unknown address") {}
  SECTION("endpoint unreachable") {
    transport.add_endpoint(w.address, 1);
    transport.set_mode(w.address, Mode::unreachable);
  }

  auto o = run(transport, w, job);
  auto p = ping(transport, w, 1s);
  CHECK_FALSE(o->done);
  CHECK_FALSE(p->done);
  REQUIRE(run_until(io, [&] { return o->done && p->done; }, 2s));
  CHECK(o->ec == core::errc::worker_unreachable);
  CHECK(core::never_accepted(o->ec));
  CHECK_FALSE(o->result.success);
  CHECK_THAT(o->result.error, Catch::Contains(w.address));
  CHECK(p->ec == core::errc::worker_unreachable);
  CHECK(transport.runs_started(w.address) == 0);
}

TEST_CASE("LoopbackTransport: an endpoint that becomes unreachable loses its running jobs", "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  HeldCalls held;
  auto w = make_worker("w1", 2);
  transport.add_endpoint(w.address, 2, held.runner());
  const auto j1 = make_job("j1");

  auto o = run(transport, w, j1);
  REQUIRE(run_until(io, [&] { return held.size() == 1; }, 2s));
  REQUIRE(transport.running(w.address) == 1);

  transport.set_mode(w.address, Mode::unreachable);
  REQUIRE(run_until(io, [&] { return o->done; }, 2s));
  CHECK(o->ec == core::errc::worker_lost);
  CHECK_FALSE(core::never_accepted(o->ec));
  CHECK_FALSE(o->result.error.empty());
  CHECK(transport.running(w.address) == 0);
  // The worker's late answer is discarded: the first outcome stands.
  CHECK_FALSE(held.at(0).complete(core::JobResult{}));
  run_ready(io);
  CHECK(o->ec == core::errc::worker_lost);
}

TEST_CASE("LoopbackTransport: restart gives a new incarnation and loses running jobs", "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  HeldCalls held;
  auto w = make_worker("w1");
  transport.add_endpoint(w.address, 1, held.runner());
  const auto j1 = make_job("j1");

  auto before = ping(transport, w, 1s);
  auto o = run(transport, w, j1);
  REQUIRE(run_until(io, [&] { return before->done && held.size() == 1; }, 2s));
  REQUIRE_FALSE(before->ec);
  CHECK(before->reply.worker_id == "w1");
  CHECK(before->reply.incarnation == transport.incarnation(w.address));

  auto during = ping(transport, w, 1s);
  REQUIRE(run_until(io, [&] { return during->done; }, 2s));
  CHECK(during->reply.state == core::WorkerState::busy);
  CHECK(during->reply.running_jobs == std::vector<std::string>{"j1"});

  transport.restart(w.address);
  REQUIRE(run_until(io, [&] { return o->done; }, 2s));
  CHECK(o->ec == core::errc::worker_lost);
  auto after = ping(transport, w, 1s);
  REQUIRE(run_until(io, [&] { return after->done; }, 2s));
  REQUIRE_FALSE(after->ec);
  CHECK(after->reply.incarnation != before->reply.incarnation);
  CHECK(after->reply.state == core::WorkerState::free);
  CHECK(after->reply.running_jobs.empty());
}

TEST_CASE("LoopbackTransport: a silent endpoint's ping times out after its deadline", "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  auto w = make_worker("w1");
  transport.add_endpoint(w.address, 1);
  transport.set_mode(w.address, Mode::silent);

  const auto sent = std::chrono::steady_clock::now();
  auto p = ping(transport, w, 40ms);
  run_ready(io);
  CHECK_FALSE(p->done);
  REQUIRE(run_until(io, [&] { return p->done; }, 2s));
  const auto took = std::chrono::steady_clock::now() - sent;
  CHECK(p->ec == core::errc::ping_timeout);
  CHECK(took >= 40ms);
  CHECK(took < 1s);
  CHECK(p->reply.worker_id.empty());
}

TEST_CASE("LoopbackTransport: a pending ping is cancelled through its cancellation slot",
          "[in_memory][transport][threads]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  auto w = make_worker("w1");
  transport.add_endpoint(w.address, 1);
  transport.set_mode(w.address, Mode::silent);
  asio::cancellation_signal signal;

  SECTION("it completes at once with operation_aborted, and its deadline's timer goes with it") {
    // A deadline no test waits for: only the cancellation can complete it.
    auto o = ping(transport, w, std::chrono::hours(1), signal.slot());
    run_ready(io);
    CHECK_FALSE(o->done);

    signal.emit(asio::cancellation_type::terminal);
    CHECK_FALSE(o->done);  // never inline
    REQUIRE(run_until(io, [&] { return o->done; }, 2s));
    CHECK(o->ec == asio::error::operation_aborted);
    CHECK(o->reply.worker_id.empty());

    io.restart();
    io.run_for(2s);
    CHECK(io.stopped());  // nothing left to wait for
    signal.emit(asio::cancellation_type::terminal);  // a second cancellation changes nothing
    run_ready(io);
    CHECK(o->completions == 1);
    CHECK(o->ec == asio::error::operation_aborted);
  }

  SECTION("cancelled from another thread while its deadline passes, it completes once") {
    auto o = ping(transport, w, 5ms, signal.slot());
    std::thread canceller([&] { signal.emit(asio::cancellation_type::terminal); });
    REQUIRE(run_until(io, [&] { return o->done; }, 2s));
    canceller.join();
    io.restart();
    io.run_for(2s);
    CHECK(io.stopped());
    CHECK(o->completions == 1);
    CHECK((o->ec == asio::error::operation_aborted || o->ec == core::errc::ping_timeout));
  }
}

TEST_CASE("LoopbackTransport: a runner reports progress and completes later", "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  HeldCalls held;
  auto w = make_worker("w1");
  transport.add_endpoint(w.address, 1, held.runner());
  const auto job = make_job("j1");

  std::mutex mutex;
  std::vector<core::ProgressEvent> events;
  auto o = run(transport, w, job, [&](const core::ProgressEvent& e) {
    std::lock_guard lock(mutex);
    events.push_back(e);
  });
  REQUIRE(run_until(io, [&] { return held.size() == 1; }, 2s));
  auto call = held.at(0);
  CHECK(call.job().id == "j1");
  CHECK(call.worker().id == "w1");

  // The worker reports from its own thread, as a real transport's reader does.
  std::thread worker_thread([call] {
    call.progress("cloning", "Cloning into 'app'...");
    call.progress("building");
    call.progress("pushing", "pushed sha256:abc");
  });
  worker_thread.join();
  run_ready(io);
  CHECK_FALSE(o->done);  // progress is not completion
  {
    std::lock_guard lock(mutex);
    REQUIRE(events.size() == 4);
    CHECK(events[0].phase == core::Phase::accepted);  // reports_accepted: first, as the run starts
    events.erase(events.begin());
    CHECK(events[0].job_id == "j1");
    CHECK(events[0].worker_id == "w1");
    CHECK(events[0].stage == "cloning");
    CHECK(events[0].line == "Cloning into 'app'...");
    CHECK(events[1].stage == "building");
    CHECK(events[1].line.empty());
    CHECK(events[2].stage == "pushing");
  }

  bool first = false, second = true;
  std::thread finisher([call, &first, &second] {
    core::JobResult r;
    r.success = true;
    r.image_url = "registry.local/app:1";
    first = call.complete(r);
    second = call.complete(r);
  });
  finisher.join();
  CHECK(first);
  CHECK_FALSE(second);  // the first settle wins
  REQUIRE(run_until(io, [&] { return o->done; }, 2s));
  CHECK_FALSE(o->ec);
  CHECK(o->result.success);
  CHECK(o->result.image_url == "registry.local/app:1");
  CHECK(o->result.job_id == "j1");
  CHECK(o->result.worker_id == "w1");

  call.progress("pushing", "too late");  // after completion: dropped
  std::lock_guard lock(mutex);
  CHECK(events.size() == 3);
}

TEST_CASE("LoopbackTransport: a cancelled run completes with operation_aborted and frees its slot",
          "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  HeldCalls held;
  auto w = make_worker("w1");
  transport.add_endpoint(w.address, 1, held.runner());

  asio::cancellation_signal signal;
  auto o = std::make_shared<RunOutcome>();
  {
    const auto job = make_job("j1");
    transport.async_run(w, job, {}, asio::bind_cancellation_slot(signal.slot(), record_into(o)));
    REQUIRE(run_until(io, [&] { return held.size() == 1; }, 2s));
    REQUIRE(transport.running(w.address) == 1);

    signal.emit(asio::cancellation_type::terminal);
    REQUIRE(run_until(io, [&] { return o->done; }, 2s));
  }  // the caller's job is gone once its handler ran
  CHECK(o->ec == asio::error::operation_aborted);
  CHECK(transport.running(w.address) == 0);

  // The runner still holds its Call: it may look at the job and settle it, harmlessly.
  auto call = held.at(0);
  CHECK(call.job().id == "j1");
  CHECK_FALSE(call.complete(core::JobResult{}));

  // The slot is free: the single-slot endpoint accepts the next job.
  const auto j2 = make_job("j2");
  auto next = run(transport, w, j2);
  REQUIRE(run_until(io, [&] { return held.size() == 2; }, 2s));
  CHECK_FALSE(next->done);
  REQUIRE(held.at(1).complete(core::JobResult{}));
  REQUIRE(run_until(io, [&] { return next->done; }, 2s));
  CHECK_FALSE(next->ec);
}

// A silent endpoint hangs like a stopped process: a run offered meanwhile
// waits. Its state must therefore live until it is cancelled, lost, or
// resumed; nothing else holds it.
TEST_CASE("LoopbackTransport: a run on a silent endpoint hangs until cancelled", "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  auto w = make_worker("w1");
  transport.add_endpoint(w.address, 1);
  transport.set_mode(w.address, Mode::silent);
  const auto job = make_job("j1");

  asio::cancellation_signal signal;
  auto o = std::make_shared<RunOutcome>();
  transport.async_run(w, job, {}, asio::bind_cancellation_slot(signal.slot(), record_into(o)));
  run_ready(io);
  CHECK_FALSE(o->done);
  CHECK(transport.running(w.address) == 1);

  signal.emit(asio::cancellation_type::terminal);
  CHECK(run_until(io, [&] { return o->done; }, 500ms));
  CHECK(o->ec == asio::error::operation_aborted);
  CHECK(transport.running(w.address) == 0);

  // The cancelled run gave its slot back: once up, the one-slot endpoint runs a job.
  transport.set_mode(w.address, Mode::up);
  const auto j2 = make_job("j2");
  auto next = run(transport, w, j2);
  REQUIRE(run_until(io, [&] { return next->done; }, 2s));
  CHECK_FALSE(next->ec);
  CHECK(next->result.success);
}

TEST_CASE("LoopbackTransport: a run on a silent endpoint is lost when the endpoint goes away",
          "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  auto w = make_worker("w1");
  transport.add_endpoint(w.address, 1);
  transport.set_mode(w.address, Mode::silent);
  const auto job = make_job("j1");

  auto o = run(transport, w, job);
  run_ready(io);
  CHECK_FALSE(o->done);
  transport.set_mode(w.address, Mode::unreachable);
  CHECK(run_until(io, [&] { return o->done; }, 500ms));
  CHECK(o->ec == core::errc::worker_lost);
  CHECK(transport.running(w.address) == 0);
}

// Without this a worker that hung for less than the health monitor's patience
// would keep the jobs offered to it meanwhile forever.
TEST_CASE("LoopbackTransport: runs offered to a silent endpoint proceed once it is up again",
          "[in_memory][transport]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  auto plain = make_worker("w1");
  auto with_runner = make_worker("w2");
  transport.add_endpoint(plain.address, 1);
  HeldCalls held;
  transport.add_endpoint(with_runner.address, 1, held.runner());
  transport.set_mode(plain.address, Mode::silent);
  transport.set_mode(with_runner.address, Mode::silent);
  const auto j1 = make_job("j1");
  const auto j2 = make_job("j2");
  auto o1 = run(transport, plain, j1);
  auto o2 = run(transport, with_runner, j2);
  run_ready(io);
  CHECK_FALSE(o1->done);
  CHECK_FALSE(o2->done);
  CHECK(held.size() == 0);  // the runner has not seen it: the process is stopped

  transport.set_mode(plain.address, Mode::up);
  transport.set_mode(with_runner.address, Mode::up);
  REQUIRE(run_until(io, [&] { return o1->done && held.size() == 1; }, 2s));
  CHECK_FALSE(o1->ec);
  CHECK(o1->result.success);
  CHECK(o1->result.job_id == "j1");
  CHECK(held.at(0).job().id == "j2");
  REQUIRE(held.at(0).complete(core::JobResult{}));
  REQUIRE(run_until(io, [&] { return o2->done; }, 2s));
  CHECK_FALSE(o2->ec);
  CHECK(transport.running(plain.address) == 0);
  CHECK(transport.running(with_runner.address) == 0);
}

// ===========================================================================
// InMemoryStatusSink

TEST_CASE("InMemoryStatusSink: confirms publishes and never inline", "[in_memory][sink]") {
  asio::io_context io;
  InMemoryStatusSink sink(io.get_executor());
  auto p = publish(sink, "j1");
  CHECK_FALSE(p->done);
  REQUIRE(run_until(io, [&] { return p->done; }, 2s));
  CHECK_FALSE(p->ec);
  REQUIRE(sink.size() == 1);
  CHECK(sink.results()[0].job_id == "j1");
}

TEST_CASE("InMemoryStatusSink: held confirms stay pending until confirm_held", "[in_memory][sink]") {
  asio::io_context io;
  InMemoryStatusSink sink(io.get_executor());
  sink.hold_confirms(true);
  auto p1 = publish(sink, "j1");
  auto p2 = publish(sink, "j2");
  run_ready(io);
  CHECK_FALSE(p1->done);
  CHECK_FALSE(p2->done);
  CHECK(sink.held() == 2);
  CHECK(sink.size() == 0);  // not durable yet

  CHECK(sink.confirm_held() == 2);
  CHECK(sink.held() == 0);
  CHECK(sink.size() == 2);
  REQUIRE(run_until(io, [&] { return p1->done && p2->done; }, 2s));
  CHECK_FALSE(p1->ec);
  CHECK_FALSE(p2->ec);
  const auto results = sink.results();
  CHECK(results[0].job_id == "j1");
  CHECK(results[1].job_id == "j2");

  sink.hold_confirms(false);
  auto p3 = publish(sink, "j3");
  REQUIRE(run_until(io, [&] { return p3->done; }, 2s));
  CHECK(sink.size() == 3);
  CHECK(sink.confirm_held() == 0);
}

TEST_CASE("InMemoryStatusSink: a held publish is cancelled through its cancellation slot", "[in_memory][sink]") {
  asio::io_context io;
  InMemoryStatusSink sink(io.get_executor());
  sink.hold_confirms(true);
  asio::cancellation_signal signal;
  auto cancelled = std::make_shared<Published>();
  core::JobResult r;
  r.job_id = "j1";
  sink.async_publish(r, asio::bind_cancellation_slot(signal.slot(), [cancelled](std::error_code ec) {
                       cancelled->done = true;
                       cancelled->ec = ec;
                     }));
  auto kept = publish(sink, "j2");
  run_ready(io);
  REQUIRE(sink.held() == 2);

  signal.emit(asio::cancellation_type::terminal);
  CHECK_FALSE(cancelled->done);  // never inline
  REQUIRE(run_until(io, [&] { return cancelled->done; }, 2s));
  CHECK(cancelled->ec == asio::error::operation_aborted);
  CHECK(sink.held() == 1);

  // The withdrawn status is never confirmed; the other one still is.
  CHECK(sink.confirm_held() == 1);
  REQUIRE(run_until(io, [&] { return kept->done; }, 2s));
  CHECK_FALSE(kept->ec);
  const auto results = sink.results();
  REQUIRE(results.size() == 1);
  CHECK(results[0].job_id == "j2");

  signal.emit(asio::cancellation_type::terminal);  // after completion: nothing happens
  run_ready(io);
  CHECK(sink.size() == 1);
}

TEST_CASE("InMemoryStatusSink: a cancellation after the sink is gone does nothing", "[in_memory][sink]") {
  asio::io_context io;
  asio::cancellation_signal signal;
  auto p = std::make_shared<Published>();
  {
    InMemoryStatusSink sink(io.get_executor());
    sink.hold_confirms(true);
    core::JobResult r;
    r.job_id = "j1";
    sink.async_publish(r, asio::bind_cancellation_slot(signal.slot(), [p](std::error_code ec) {
                         p->done = true;
                         p->ec = ec;
                       }));
  }
  signal.emit(asio::cancellation_type::terminal);
  run_ready(io);
  CHECK_FALSE(p->done);  // the sink destroyed the handler with itself, uninvoked
}

TEST_CASE("InMemoryStatusSink: fail_next fails exactly that many publishes", "[in_memory][sink]") {
  asio::io_context io;
  InMemoryStatusSink sink(io.get_executor());
  sink.fail_next(2);
  auto p1 = publish(sink, "j1");
  auto p2 = publish(sink, "j2");
  auto p3 = publish(sink, "j3");
  REQUIRE(run_until(io, [&] { return p1->done && p2->done && p3->done; }, 2s));
  CHECK(p1->ec == core::errc::sink_unavailable);
  CHECK(p2->ec == core::errc::sink_unavailable);
  CHECK_FALSE(p3->ec);
  REQUIRE(sink.size() == 1);  // failed statuses are not kept
  CHECK(sink.results()[0].job_id == "j3");
}

TEST_CASE("InMemoryStatusSink: wait_for sees confirms made on other threads", "[in_memory][sink][threads]") {
  asio::io_context io;
  InMemoryStatusSink sink(io.get_executor());
  CHECK_FALSE(sink.wait_for(1, 10ms));  // nothing confirmed: times out

  SECTION("published from another thread") {
    std::thread publisher([&] {
      for (int i = 0; i < 3; ++i) publish(sink, "j" + std::to_string(i));
    });
    CHECK(sink.wait_for(3, 2s));
    publisher.join();
  }
  SECTION("held, then confirmed from another thread") {
    sink.hold_confirms(true);
    for (int i = 0; i < 3; ++i) publish(sink, "j" + std::to_string(i));
    CHECK(sink.held() == 3);
    std::size_t confirmed = 0;
    std::thread confirmer([&] { confirmed = sink.confirm_held(); });
    CHECK(sink.wait_for(3, 2s));
    confirmer.join();
    CHECK(confirmed == 3);
  }
  CHECK(sink.size() == 3);
  run_ready(io);  // the publish handlers themselves ran on the io_context
}
