// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0

#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/health_monitor.hpp>
#include <blacktree/core/in_memory.hpp>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <thread>

#include "../support/test_support.hpp"

namespace core = blacktree::core;
using namespace std::chrono_literals;
using blacktree::test::make_job;
using blacktree::test::make_worker;
using blacktree::test::run_ready;
using blacktree::test::run_until;
using core::LoopbackTransport;

namespace {

using TestDispatcher = core::Dispatcher<core::InMemoryQueue, LoopbackTransport, core::InMemoryStatusSink>;

struct Fixture {
  asio::io_context io;
  core::InMemoryQueue queue{io.get_executor()};
  LoopbackTransport transport{io.get_executor()};
  core::InMemoryStatusSink sink{io.get_executor()};
  core::WorkerPool pool{io.get_executor()};

  void add_worker(const std::string& id, std::uint32_t capacity = 1, core::Labels labels = {},
                  LoopbackTransport::Runner runner = {}) {
    transport.add_endpoint("loopback:" + id, capacity, std::move(runner));
    auto info = make_worker(id, capacity, std::move(labels));
    info.incarnation = transport.incarnation(info.address);
    REQUIRE(pool.register_worker(info));
    REQUIRE(pool.mark_alive(id));
  }

  void publish(int n, const std::string& prefix = "job-") {
    for (int i = 0; i < n; ++i) queue.publish(make_job(prefix + std::to_string(i)));
  }

  std::map<std::string, int> status_counts() const {
    std::map<std::string, int> counts;
    for (const auto& r : sink.results()) ++counts[r.job_id];
    return counts;
  }

  std::optional<core::JobResult> status(const std::string& id) const {
    for (const auto& r : sink.results())
      if (r.job_id == id) return r;
    return std::nullopt;
  }

  /// A started dispatcher over this fixture's parts.
  std::unique_ptr<TestDispatcher> start(core::DispatcherOptions options = {}) {
    auto d = std::make_unique<TestDispatcher>(io.get_executor(), queue, transport, sink, pool, options);
    d->start();
    return d;
  }

  bool stop(TestDispatcher& d, std::chrono::milliseconds deadline, std::error_code& result) {
    bool stopped = false;
    d.async_stop(deadline, [&](std::error_code ec) {
      stopped = true;
      result = ec;
    });
    return run_until(io, [&] { return stopped; });
  }
};

// A job as the broker hands it out again (after a lost connection).
core::Job redelivered_job(std::string id) {
  core::Job job = make_job(std::move(id));
  job.redelivered = true;
  return job;
}

// A runner that keeps every call until the test completes it.
struct Held {
  std::vector<LoopbackTransport::Call> calls;
  LoopbackTransport::Runner runner() {
    return [this](LoopbackTransport::Call call) { calls.push_back(std::move(call)); };
  }
  void succeed_all() {
    for (auto& c : calls) {
      core::JobResult r;
      r.success = true;
      c.complete(r);
    }
    calls.clear();
  }
};

}  // namespace

TEST_CASE("Dispatcher: every job gets exactly one status and is acked after it", "[dispatcher]") {
  Fixture f;
  f.add_worker("w1", 2);
  f.add_worker("w2", 3);
  f.publish(200);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 200; }));

  auto counts = f.status_counts();
  CHECK(counts.size() == 200);
  for (const auto& [id, n] : counts) CHECK(n == 1);
  for (const auto& r : f.sink.results()) {
    CHECK(r.success);
    CHECK((r.worker_id == "w1" || r.worker_id == "w2"));
    CHECK(r.attempts == 1);
    CHECK_FALSE(r.redelivered);
  }
  CHECK(f.queue.unacked() == 0);
  CHECK(f.queue.ready() == 0);
  auto stats = d.stats();
  CHECK(stats.received == 200);
  CHECK(stats.succeeded == 200);
  CHECK(stats.in_flight == 0);
  for (const auto& w : f.pool.snapshot()) CHECK(w.in_use == 0);
}

TEST_CASE("Dispatcher: takes from the source only what it can place", "[dispatcher][seed]") {
  // Seed weakness: unlimited prefetch and a goroutine per message, so memory
  // grew with the depth of the queue.
  Fixture f;
  Held held;
  f.add_worker("w1", 2, {}, held.runner());
  f.add_worker("w2", 1, {}, held.runner());
  f.publish(100);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 3; }));
  run_ready(f.io);
  CHECK(f.queue.unacked() == 3);
  CHECK(f.queue.ready() == 97);
  CHECK(f.queue.prefetch() == 3);  // told to the source, so a broker holds the rest

  // More capacity arrives: the dispatcher takes more, and says so.
  f.add_worker("w3", 4, {}, held.runner());
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 7; }));
  CHECK(f.queue.prefetch() == 7);

  while (f.sink.size() < 100) {
    held.succeed_all();
    REQUIRE(run_until(f.io, [&] { return !held.calls.empty() || f.sink.size() == 100; }));
  }
  CHECK(f.queue.max_unacked() <= 7);
  CHECK(f.queue.acked() <= 100);
}

TEST_CASE("Dispatcher: with no live worker it takes nothing", "[dispatcher]") {
  Fixture f;
  f.publish(5);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  run_ready(f.io);
  CHECK(f.queue.unacked() == 0);
  CHECK(f.queue.ready() == 5);
  f.add_worker("late");
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 5; }));
}

TEST_CASE("Dispatcher: waiting for a worker or for work, it runs nothing (no busy polling)", "[dispatcher][seed]") {
  // Seed weakness: loops that polled for a free worker and for messages.
  Fixture f;
  Held held;
  f.publish(3);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  run_ready(f.io);
  CHECK(f.io.poll() == 0);  // no worker: nothing taken, nothing scheduled

  f.add_worker("w1", 1, {}, held.runner());
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  run_ready(f.io);
  CHECK(f.io.poll() == 0);  // the only slot is busy: the other jobs stay queued, nothing spins
  CHECK(f.queue.ready() == 2);

  while (f.sink.size() < 3) {
    held.succeed_all();
    REQUIRE(run_until(f.io, [&] { return !held.calls.empty() || f.sink.size() == 3; }));
  }
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 3; }));
  run_ready(f.io);
  CHECK(f.io.poll() == 0);  // the queue is empty: one receive waits, nothing spins
}

TEST_CASE("Dispatcher: nothing is acked before its status is durable", "[dispatcher][seed]") {
  // Seed weakness: msg.Ack after a fire-and-forget publish (and in places
  // before the job ran at all).
  Fixture f;
  f.add_worker("w1", 4);
  f.sink.hold_confirms(true);
  f.publish(4);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.sink.held() == 4; }));
  run_ready(f.io);
  CHECK(f.queue.acked() == 0);
  CHECK(f.queue.unacked() == 4);
  CHECK(f.sink.confirm_held() == 4);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 4; }));
  CHECK(f.queue.unacked() == 0);
}

TEST_CASE("Dispatcher: a status the sink refused is retried, then acked once", "[dispatcher]") {
  Fixture f;
  f.add_worker("w1");
  f.sink.fail_next(3);
  f.publish(1);
  core::DispatcherOptions options;
  options.publish_retry_initial = 1ms;
  options.publish_retry_max = 4ms;
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool, options);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.sink.size() == 1);
  CHECK(f.transport.runs_started("loopback:w1") == 1);  // the job ran once
}

TEST_CASE("Dispatcher: a job its worker never accepted goes to another worker", "[dispatcher]") {
  Fixture f;
  f.add_worker("down");
  f.add_worker("up");
  f.transport.set_mode("loopback:down", LoopbackTransport::Mode::unreachable);
  f.publish(10);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 10; }));
  for (const auto& r : f.sink.results()) {
    CHECK(r.success);
    CHECK(r.worker_id == "up");
  }
  // One failed offer is not a death: only missed pings declare a worker dead.
  CHECK(f.pool.find("down")->state != core::WorkerState::dead);
  CHECK(d.stats().not_accepted >= 1);
  CHECK(f.status_counts().size() == 10);
}

TEST_CASE("Dispatcher: a worker that refuses (full) is skipped, the job still gets one status", "[dispatcher]") {
  Fixture f;
  Held held;
  // The pool believes "full" has 3 slots; its endpoint takes only 1 at a time.
  f.transport.add_endpoint("loopback:full", 1, held.runner());
  REQUIRE(f.pool.register_worker(make_worker("full", 3)));
  REQUIRE(f.pool.mark_alive("full"));
  f.add_worker("spare", 5);
  f.publish(6);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 5; }));
  held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 6; }));
  auto counts = f.status_counts();
  CHECK(counts.size() == 6);
  for (const auto& [id, n] : counts) CHECK(n == 1);
  CHECK(f.pool.find("full")->state != core::WorkerState::dead);  // refusing is not dying
}

TEST_CASE("Dispatcher: after max_attempts offers nobody answered a job fails with the reason", "[dispatcher]") {
  Fixture f;
  f.transport.add_endpoint("loopback:w1", 1);
  f.transport.set_mode("loopback:w1", LoopbackTransport::Mode::unreachable);
  REQUIRE(f.pool.register_worker(make_worker("w1")));
  REQUIRE(f.pool.mark_alive("w1"));
  f.publish(1);
  core::DispatcherOptions options;
  options.max_attempts = 3;
  options.refused_slot_cooldown = 10ms;
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool, options);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  auto r = f.status("job-0");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK(r->attempts == 3);
  CHECK_THAT(r->error, Catch::Contains("no worker accepted the job after 3 attempts"));
}

TEST_CASE("Dispatcher: refusals (full) use up no attempts: the job waits for a slot like behind a busy worker",
          "[dispatcher]") {
  Fixture f;
  f.transport.add_endpoint("loopback:w1", 0);  // believed to have a slot, refuses everything: full
  REQUIRE(f.pool.register_worker(make_worker("w1")));
  REQUIRE(f.pool.mark_alive("w1"));
  f.publish(1);
  core::DispatcherOptions options;
  options.max_attempts = 3;
  options.refused_slot_cooldown = 10ms;
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool, options);
  d.start();
  // Far more refusals than max_attempts, and still no status: it waits.
  REQUIRE(run_until(f.io, [&] { return d.stats().not_accepted >= 6; }));
  CHECK(f.sink.size() == 0);
  // A worker with room comes: the job runs there, once.
  f.add_worker("w2", 1);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  auto r = f.status("job-0");
  REQUIRE(r);
  CHECK(r->success);
  CHECK(r->worker_id == "w2");
  CHECK(r->attempts > 3);
}

TEST_CASE("Dispatcher: a worker lost mid-run gives a prompt failure status and is not put back",
          "[dispatcher][seed]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 1, {}, held.runner());
  core::HealthOptions health{20ms, 10ms, 2};
  core::HealthMonitor<LoopbackTransport> monitor(f.io.get_executor(), f.transport, f.pool, health);
  monitor.start();
  f.publish(2);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));

  // The worker hangs (a kill -9 behind a network that drops packets).
  f.transport.set_mode("loopback:w1", LoopbackTransport::Mode::silent);
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 1; }, 2s));
  auto r = f.status("job-0");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK_THAT(r->error, Catch::Contains("worker w1 was lost while running the job"));
  CHECK_THAT(r->error, Catch::Contains("missed 2 pings"));
  CHECK(f.pool.find("w1")->state == core::WorkerState::dead);
  CHECK(d.stats().lost == 1);
  // The second job waits rather than going to the dead worker.
  run_ready(f.io);
  CHECK(held.calls.size() == 1);
  CHECK(f.transport.runs_started("loopback:w1") == 1);

  // It comes back: used again.
  f.transport.set_mode("loopback:w1", LoopbackTransport::Mode::up);
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 2; }, 2s));
  held.calls.back().complete(core::JobResult{});
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 2; }));
  monitor.stop();
}

TEST_CASE("Dispatcher: a transport that reports the worker lost gives a failure status", "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 1, {}, held.runner());
  f.publish(1);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  f.transport.set_mode("loopback:w1", LoopbackTransport::Mode::unreachable);  // connection reset
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  auto r = f.status("job-0");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK_THAT(r->error, Catch::Contains("was lost"));
  CHECK_THAT(r->error, Catch::Contains("reset"));
}

TEST_CASE("Dispatcher: a job that ran and failed is reported, never run again", "[dispatcher]") {
  Fixture f;
  f.add_worker("w1", 1, {}, [](LoopbackTransport::Call call) {
    core::JobResult r;
    r.success = false;
    r.error = "build step 3 failed: exit code 2";
    call.complete(r);
  });
  f.publish(1);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  run_ready(f.io);
  CHECK(f.transport.runs_started("loopback:w1") == 1);
  REQUIRE(f.sink.size() == 1);
  CHECK(f.sink.results()[0].error == "build step 3 failed: exit code 2");
  CHECK(f.queue.dead_letters().empty());
}

TEST_CASE("Dispatcher: invalid deliveries are dead-lettered with the reason, with a status when possible",
          "[dispatcher][seed]") {
  // Seed weakness: parseJob errors were ignored; bad JSON vanished.
  Fixture f;
  f.add_worker("w1");
  f.queue.publish_invalid(make_job("has-id"), "branch: must not start with '-'");
  f.queue.publish_invalid(make_job(""), "not valid JSON: unexpected '}' at offset 17");
  f.queue.publish(make_job(""));  // valid JSON, but no jobId
  f.publish(1, "good-");
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.dead_letters().size() == 3 && f.sink.size() == 2; }));
  run_ready(f.io);

  auto bad = f.status("has-id");
  REQUIRE(bad);
  CHECK_FALSE(bad->success);
  CHECK(bad->error == "invalid job: branch: must not start with '-'");
  CHECK(f.status("good-0"));
  auto letters = f.queue.dead_letters();
  CHECK(letters[0].reason == "branch: must not start with '-'");
  CHECK(letters[1].reason == "not valid JSON: unexpected '}' at offset 17");
  CHECK(letters[2].reason == "jobId is missing or empty");
  CHECK(f.sink.size() == 2);  // no status for messages without an id
  CHECK(f.transport.runs_started("loopback:w1") == 1);  // only the good job ran
  CHECK(d.stats().dead_lettered == 3);
  CHECK(f.queue.unacked() == 0);
}

TEST_CASE("Dispatcher: a job requiring a region only lands on a worker of that region", "[dispatcher]") {
  Fixture f;
  f.add_worker("eu", 2, {{"region", "eu"}});
  f.add_worker("us", 2, {{"region", "us"}});
  for (int i = 0; i < 20; ++i) f.queue.publish(make_job("us-" + std::to_string(i), {{"region", "us"}}));
  for (int i = 0; i < 20; ++i) f.queue.publish(make_job("any-" + std::to_string(i)));
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 40; }));
  for (const auto& r : f.sink.results())
    if (r.job_id.starts_with("us-")) CHECK(r.worker_id == "us");
}

TEST_CASE("Dispatcher: a job no worker can take fails after the placement timeout", "[dispatcher]") {
  Fixture f;
  f.add_worker("eu", 1, {{"region", "eu"}});
  f.queue.publish(make_job("mars-1", {{"region", "mars"}}));
  core::DispatcherOptions options;
  options.placement_timeout = 50ms;
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool, options);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }, 2s));
  auto r = f.status("mars-1");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK(r->error == "no live worker offers region=mars (waited 50 ms for one)");
  CHECK(f.pool.waiting() == 0);
}

TEST_CASE("Dispatcher: redelivered jobs are flagged in their status", "[dispatcher]") {
  Fixture f;
  f.add_worker("w1");
  f.queue.publish(redelivered_job("again"));
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 1; }));
  CHECK(f.sink.results()[0].redelivered);
}

TEST_CASE("Dispatcher: graceful stop lets running jobs finish and leaves the rest queued", "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 2, {}, held.runner());
  f.publish(10);
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 2; }));

  bool stopped = false;
  std::error_code result;
  d.async_stop(5s, [&](std::error_code ec) {
    stopped = true;
    result = ec;
  });
  run_ready(f.io);
  CHECK_FALSE(stopped);  // two jobs still running
  held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return stopped; }));
  CHECK_FALSE(result);
  CHECK(f.sink.size() == 2);
  CHECK(f.queue.acked() == 2);
  CHECK(f.queue.unacked() == 0);
  CHECK(f.queue.ready() == 8);  // never taken
  CHECK(held.calls.empty());
}

TEST_CASE("Dispatcher: once its stop completed it leaves no timer pending, so the io_context runs out of work",
          "[dispatcher]") {
  // An embedding service joins its io threads after async_stop: a deadline
  // timer left armed for a run that is over (the accept timeout, or the run
  // timeout of 30 minutes), or a refused slot's cooldown, would keep
  // io_context::run() from returning.
  Fixture f;
  Held held;
  f.add_worker("w1", 1);
  f.add_worker("w2", 1, {}, held.runner());
  f.transport.add_endpoint("loopback:full", 0);  // believed to have a slot, refuses: its slot rests
  REQUIRE(f.pool.register_worker(make_worker("full", 1)));
  REQUIRE(f.pool.mark_alive("full"));
  f.publish(3);  // one lands on "full", is refused, and runs on w1 after the first
  core::DispatcherOptions options;
  options.refused_slot_cooldown = 600s;
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool, options);
  d.start();
  REQUIRE(run_until(f.io, [&] {
    return f.queue.acked() == 2 && held.calls.size() == 1 && d.stats().not_accepted >= 1;
  }));
  const bool forced = GENERATE(false, true);
  bool stopped = false;
  std::error_code result;
  d.async_stop(forced ? 30ms : 10s, [&](std::error_code ec) {
    stopped = true;
    result = ec;
  });
  if (!forced) held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return stopped; }));
  CHECK(result == (forced ? std::error_code(core::errc::stop_deadline_exceeded) : std::error_code()));
  CHECK(f.queue.acked() == (forced ? 2 : 3));
  run_ready(f.io);
  CHECK(f.io.stopped());  // out of work: nothing of the dispatcher is pending
  for (const auto& w : f.pool.snapshot()) CHECK(w.in_use == 0);  // the resting slot came back
}

TEST_CASE("Dispatcher: at the stop deadline, running jobs are cancelled and handed back", "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 2, {}, held.runner());
  f.queue.publish(make_job("slow"));
  f.queue.publish(make_job("waiting", {{"region", "nowhere"}}));
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  // One job runs, the other waits for a worker that does not exist.
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1 && f.pool.waiting() == 1; }));

  std::error_code result;
  REQUIRE(f.stop(d, 30ms, result));
  CHECK(result == core::errc::stop_deadline_exceeded);
  CHECK(f.sink.size() == 0);
  CHECK(f.queue.unacked() == 0);
  CHECK(f.queue.ready() == 2);
  CHECK(d.stats().handed_back == 2);
  // The transport was told to let go: the call can no longer complete.
  CHECK_FALSE(held.calls[0].complete(core::JobResult{}));
  CHECK(f.transport.running("loopback:w1") == 0);
  for (const auto& w : f.pool.snapshot()) CHECK(w.in_use == 0);
}

TEST_CASE("Dispatcher: a job waiting for a worker is handed back at once by stop", "[dispatcher]") {
  Fixture f;
  f.add_worker("eu", 1, {{"region", "eu"}});
  f.queue.publish(make_job("us-job", {{"region", "us"}}));
  TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.pool.waiting() == 1; }));
  std::error_code result;
  REQUIRE(f.stop(d, 10s, result));
  CHECK_FALSE(result);
  CHECK(f.pool.waiting() == 0);
  CHECK(f.queue.ready() == 1);
  CHECK(f.sink.size() == 0);
}

TEST_CASE("Dispatcher: destroyed with work pending, it crashes nothing and loses nothing", "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 2, {}, held.runner());
  f.sink.hold_confirms(true);
  f.publish(5);
  {
    TestDispatcher d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool);
    d.start();
    REQUIRE(run_until(f.io, [&] { return held.calls.size() == 2; }));
    held.calls[0].complete(core::JobResult{});  // one job is waiting for its confirm
    REQUIRE(run_until(f.io, [&] { return f.sink.held() == 1; }));
  }
  f.sink.confirm_held();
  held.succeed_all();  // late completions find nobody
  run_ready(f.io);
  CHECK(f.queue.unacked() == 0);
  CHECK(f.queue.acked() == 0);
  CHECK(f.queue.ready() == 5);  // everything redeliverable
  for (const auto& w : f.pool.snapshot()) CHECK(w.in_use == 0);
}

namespace {
struct CountingObserver : core::DispatcherObserver {
  static constexpr bool wants_progress = true;
  struct Counts {
    int received = 0, assigned = 0, finished = 0, dead_lettered = 0;
    std::vector<std::string> progress;
  };
  std::shared_ptr<Counts> counts = std::make_shared<Counts>();
  void on_received(const core::Job&) { ++counts->received; }
  void on_assigned(const core::Job&, const core::WorkerInfo&) { ++counts->assigned; }
  void on_finished(const core::Job&, const core::JobResult&) { ++counts->finished; }
  void on_dead_lettered(const core::Job&, std::string_view) { ++counts->dead_lettered; }
  void on_progress(const core::ProgressEvent& e) {
    counts->progress.push_back(e.phase == core::Phase::accepted ? std::string("accepted") : e.stage + ":" + e.line);
  }
};
}  // namespace

TEST_CASE("Dispatcher: observers see each step, progress included", "[dispatcher]") {
  Fixture f;
  f.add_worker("w1", 1, {}, [](LoopbackTransport::Call call) {
    call.progress("cloning", "Cloning into 'repo'...");
    call.progress("building");
    call.complete(core::JobResult{});
  });
  f.publish(1);
  f.queue.publish(make_job(""));
  CountingObserver observer;
  auto counts = observer.counts;
  core::Dispatcher<core::InMemoryQueue, LoopbackTransport, core::InMemoryStatusSink, core::WorkerPool,
                   CountingObserver>
      d(f.io.get_executor(), f.queue, f.transport, f.sink, f.pool, {}, observer);
  d.start();
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 1 && counts->dead_lettered == 1; }));
  CHECK(counts->received == 2);
  CHECK(counts->assigned == 1);
  CHECK(counts->finished == 1);
  CHECK(counts->progress == std::vector<std::string>{"accepted", "cloning:Cloning into 'repo'...", "building:"});
}

// ---------------------------------------------------------------------------
// Delivery under faults (issue 12)

namespace {
// Records the status id of every publish attempt, confirmed or not.
struct RecordingSink {
  core::InMemoryStatusSink& inner;
  std::vector<std::pair<std::string, std::string>> attempts;  // job id, status id
  template <class Token>
  auto async_publish(const core::JobResult& result, Token&& token) {
    attempts.emplace_back(result.job_id, result.status_id);
    return inner.async_publish(result, std::forward<Token>(token));
  }
};
static_assert(core::StatusSink<RecordingSink>);
}  // namespace

TEST_CASE("Dispatcher: a delivery of a job id already in flight attaches to it and is settled with it",
          "[dispatcher][duplicates]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 2, {}, held.runner());
  f.add_worker("w2", 2, {}, held.runner());
  f.queue.publish(make_job("dup"));
  auto d = f.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  f.queue.publish(redelivered_job("dup"));  // e.g. the broker redelivered it after a connection drop
  REQUIRE(run_until(f.io, [&] { return f.queue.ready() == 0 && f.queue.unacked() == 2; }));
  run_ready(f.io);
  CHECK(held.calls.size() == 1);  // not run twice at the same time
  CHECK(f.transport.runs_started("loopback:w1") + f.transport.runs_started("loopback:w2") == 1);

  f.sink.hold_confirms(true);
  held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return f.sink.held() == 1; }));
  run_ready(f.io);
  CHECK(f.queue.acked() == 0);  // neither is acked before the status is confirmed
  CHECK(f.sink.confirm_held() == 1);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 2; }));
  CHECK(f.sink.size() == 1);  // one status for both
  CHECK(f.queue.unacked() == 0);
  CHECK(d->stats().duplicates == 1);
  CHECK(d->stats().in_flight == 0);
}

TEST_CASE("Dispatcher: a redelivery of a finished job is acked without running it again",
          "[dispatcher][duplicates]") {
  Fixture f;
  f.add_worker("w1");
  f.queue.publish(make_job("once"));
  auto d = f.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  f.queue.publish(redelivered_job("once"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 2; }));
  run_ready(f.io);
  CHECK(f.transport.runs_started("loopback:w1") == 1);
  CHECK(f.sink.size() == 1);
  CHECK(d->stats().duplicates == 1);
}

TEST_CASE("Dispatcher: the record of finished jobs is bounded in count and in time", "[dispatcher][duplicates]") {
  Fixture f;
  f.add_worker("w1");
  core::DispatcherOptions options;
  options.finished_record_size = 1;
  options.finished_record_ttl = 20ms;
  auto d = f.start(options);
  f.queue.publish(make_job("a"));
  f.queue.publish(make_job("b"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 2; }));
  f.queue.publish(make_job("a"));  // pushed out of the record by "b": runs again
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 3; }));
  CHECK(f.transport.runs_started("loopback:w1") == 3);
  f.queue.publish(make_job("a"));  // still recorded: not run
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 4; }));
  CHECK(f.transport.runs_started("loopback:w1") == 3);

  bool expired = false;
  asio::steady_timer timer(f.io, 40ms);
  timer.async_wait([&](std::error_code) { expired = true; });
  REQUIRE(run_until(f.io, [&] { return expired; }));
  f.queue.publish(make_job("a"));  // recorded longer ago than the ttl: runs again
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 5; }));
  CHECK(f.transport.runs_started("loopback:w1") == 4);
}

TEST_CASE("Dispatcher: a status carries a status id, the same on every retry of its publish, new for a new run",
          "[dispatcher][duplicates]") {
  Fixture f;
  f.add_worker("w1");
  RecordingSink sink{f.sink, {}};
  core::DispatcherOptions options;
  options.publish_retry_initial = 1ms;
  options.publish_retry_max = 2ms;
  options.finished_record_size = 0;  // so that the job runs again below
  core::Dispatcher<core::InMemoryQueue, LoopbackTransport, RecordingSink> d(f.io.get_executor(), f.queue,
                                                                            f.transport, sink, f.pool, options);
  d.start();
  f.sink.fail_next(2);
  f.queue.publish(make_job("j"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  REQUIRE(sink.attempts.size() == 3);
  const std::string first = sink.attempts[0].second;
  CHECK_FALSE(first.empty());
  CHECK(sink.attempts[1].second == first);
  CHECK(sink.attempts[2].second == first);
  CHECK(f.sink.results().at(0).status_id == first);

  f.queue.publish(make_job("j"));  // a new run of the same job id
  f.queue.publish(make_job("k"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 3; }));
  REQUIRE(sink.attempts.size() == 5);
  CHECK(sink.attempts[3].second != first);
  CHECK(sink.attempts[4].second != first);
  CHECK(sink.attempts[3].second != sink.attempts[4].second);
  CHECK(first.size() <= 64);  // fits an AMQP message-id whatever the job id's length
}

TEST_CASE("Dispatcher: an offer not accepted in time goes elsewhere, and the worker is not declared dead",
          "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("slow", 2, {}, held.runner());
  core::DispatcherOptions options;
  options.accept_timeout = 30ms;
  auto d = f.start(options);
  f.queue.publish(make_job("first"));
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  // Accepts nothing new for a while (a stalled process); its running job is fine.
  f.transport.set_mode("loopback:slow", LoopbackTransport::Mode::silent);
  f.add_worker("quick");
  f.queue.publish(make_job("second"));
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 1; }, 3s));
  auto second = f.status("second");
  REQUIRE(second);
  CHECK(second->success);
  CHECK(second->worker_id == "quick");
  CHECK(f.pool.find("slow")->state != core::WorkerState::dead);
  CHECK(d->stats().not_accepted == 1);
  CHECK(d->stats().lost == 0);

  f.transport.set_mode("loopback:slow", LoopbackTransport::Mode::up);
  held.succeed_all();  // the first job's stream was alive all along: it is not lost
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 2; }));
  auto first = f.status("first");
  REQUIRE(first);
  CHECK(first->success);
}

TEST_CASE("Dispatcher: a job waiting for a busy label does not keep another label's idle worker from work",
          "[dispatcher][labels]") {
  Fixture f;
  Held held;
  f.add_worker("a", 1, {{"pool", "a"}}, held.runner());
  f.add_worker("b", 1, {{"pool", "b"}});
  for (int i = 0; i < 4; ++i) f.queue.publish(make_job("a-" + std::to_string(i), {{"pool", "a"}}));
  for (int i = 0; i < 3; ++i) f.queue.publish(make_job("b-" + std::to_string(i), {{"pool", "b"}}));
  auto d = f.start();
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 3; }, 3s));
  for (const auto& r : f.sink.results()) CHECK(r.worker_id == "b");
  CHECK(held.calls.size() == 1);
  while (f.sink.size() < 7) {
    held.succeed_all();
    REQUIRE(run_until(f.io, [&] { return !held.calls.empty() || f.sink.size() == 7; }));
  }
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 7; }));
}

TEST_CASE("Dispatcher: a job no live worker offers the labels for fails after the placement timeout, naming them",
          "[dispatcher][labels]") {
  CHECK(core::DispatcherOptions{}.placement_timeout > 0ms);  // never forever by default
  Fixture f;
  Held held;
  f.add_worker("eu", 1, {{"region", "eu"}}, held.runner());
  f.add_worker("us", 1, {{"region", "us"}});  // idle: the window has room
  core::DispatcherOptions options;
  options.placement_timeout = 20ms;
  auto d = f.start(options);
  f.queue.publish(make_job("eu-0", {{"region", "eu"}}));
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  f.queue.publish(make_job("eu-1", {{"region", "eu"}}));  // its worker is only busy: it waits
  f.queue.publish(make_job("mars-1", {{"region", "mars"}, {"arch", "arm64"}}));
  REQUIRE(run_until(f.io, [&] { return f.sink.size() == 1; }, 2s));
  auto r = f.status("mars-1");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK_THAT(r->error, Catch::Contains("region=mars"));
  CHECK_THAT(r->error, Catch::Contains("arch=arm64"));
  CHECK_THAT(r->error, Catch::Contains("no live worker offers"));

  bool later = false;
  asio::steady_timer timer(f.io, 60ms);  // three placement timeouts
  timer.async_wait([&](std::error_code) { later = true; });
  REQUIRE(run_until(f.io, [&] { return later; }));
  CHECK(f.sink.size() == 1);  // eu-1 still waits for its busy worker
  held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 3; }));
  CHECK(f.status("eu-1")->success);
}

TEST_CASE("Dispatcher: a job running past its timeout plus the grace is reported lost and cancelled on the worker",
          "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 1, {}, held.runner());
  core::DispatcherOptions options;
  options.run_timeout_grace = 20ms;
  auto d = f.start(options);
  auto job = make_job("hung");
  job.timeout = 20ms;
  f.queue.publish(job);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }, 3s));
  auto r = f.status("hung");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK_THAT(r->error, Catch::Contains("was lost"));
  CHECK_THAT(r->error, Catch::Contains("timeout"));
  CHECK(d->stats().lost == 1);
  REQUIRE(held.calls.size() == 1);
  CHECK_FALSE(held.calls[0].complete(core::JobResult{}));  // the transport was told to cancel it
  CHECK(f.transport.running("loopback:w1") == 0);
}

// An InMemoryQueue seen through a narrower interface: `Batches` false hides
// async_receive_some (a source written before batches existed); true counts
// the batch receives and the largest batch. `Ready` adds try_receive_some
// (TakesReady) and counts what it hands over.
template <bool Batches, bool Ready = false>
struct CountingSource {
  using delivery_type = core::InMemoryQueue::Delivery;
  static constexpr bool prefetch_control = true;
  core::InMemoryQueue& queue;
  std::size_t receives = 0;
  std::size_t largest = 0;
  std::size_t taken_ready = 0;

  template <class Token>
  auto async_receive(Token&& token) {
    ++receives;
    return queue.async_receive(std::forward<Token>(token));
  }
  template <class Token>
    requires Batches
  auto async_receive_some(std::size_t max, Token&& token) {
    ++receives;
    largest = std::max(largest, max);
    return queue.async_receive_some(max, std::forward<Token>(token));
  }
  std::vector<delivery_type> try_receive_some(std::size_t max)
    requires Ready
  {
    auto ready = queue.try_receive_some(max);
    taken_ready += ready.size();
    largest = std::max(largest, ready.size());
    return ready;
  }
  void ack(delivery_type& d) { queue.ack(d); }
  void reject(delivery_type& d, core::Disposition x, std::string_view why) { queue.reject(d, x, why); }
  void set_prefetch(std::size_t n) { queue.set_prefetch(n); }
};
static_assert(!core::TakesReady<CountingSource<true>> && core::TakesReady<CountingSource<true, true>>);
static_assert(!core::ReceivesBatches<CountingSource<false>> && core::ReceivesBatches<CountingSource<true>>);

TEST_CASE("Dispatcher: a source with batches takes the free window in a receive or two, one without still works",
          "[dispatcher]") {
  const bool batches = GENERATE(false, true);
  Fixture f;
  Held held;
  f.add_worker("w1", 8, {}, held.runner());
  f.publish(40);
  auto run = [&](auto& source) {
    core::Dispatcher<std::decay_t<decltype(source)>, LoopbackTransport, core::InMemoryStatusSink> d(
        f.io.get_executor(), source, f.transport, f.sink, f.pool);
    d.start();
    // Five rounds: the window (8) fills, then all of it finishes at once.
    for (std::size_t round = 1; round <= 5; ++round) {
      REQUIRE(run_until(f.io, [&] { return held.calls.size() == 8; }));
      CHECK(f.queue.unacked() == 8);
      held.succeed_all();
      REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 8 * round; }));
    }
    CHECK(f.sink.size() == 40);
    CHECK(f.status_counts().size() == 40);
    CHECK(f.queue.max_unacked() == 8);
    return source.receives;
  };
  if (batches) {
    CountingSource<true> source{f.queue};
    const std::size_t receives = run(source);
    CHECK(source.largest == 8);
    // The first settled job frees a place and starts a receive at once; the
    // other seven come in the next: at most two per round (and the one
    // pending at the end), against one per job.
    CHECK(receives <= 11);
  } else {
    CountingSource<false> source{f.queue};
    CHECK(run(source) >= 40);  // one per job
  }
}

TEST_CASE("Dispatcher: what the source holds is taken without waiting on it, in order, within the window",
          "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 8, {}, held.runner());
  // Invalid deliveries settle the moment they are taken: each frees its
  // place again while the dispatcher is still taking (a nested pump).
  for (int i = 0; i < 30; ++i) {
    f.queue.publish(make_job("job-" + std::to_string(i)));
    f.queue.publish_invalid(make_job(""), "not valid JSON");
  }
  CountingSource<true, true> source{f.queue};
  core::Dispatcher<CountingSource<true, true>, LoopbackTransport, core::InMemoryStatusSink> d(
      f.io.get_executor(), source, f.transport, f.sink, f.pool);
  d.start();
  std::vector<std::string> order;
  while (order.size() < 30) {
    REQUIRE(run_until(f.io, [&] { return held.calls.size() == std::min<std::size_t>(8, 30 - order.size()); }));
    CHECK(f.queue.unacked() <= 8);
    for (const auto& call : held.calls) order.push_back(call.job().id);
    held.succeed_all();
  }
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 30 && f.queue.dead_letters().size() == 30; }));
  CHECK(f.queue.max_unacked() <= 8);
  CHECK(source.taken_ready == 60);  // every delivery, none through a wait
  CHECK(source.largest <= 8);
  CHECK(source.receives <= 1);      // the queue ran dry only at the end
  std::vector<std::string> expected;
  for (int i = 0; i < 30; ++i) expected.push_back("job-" + std::to_string(i));
  CHECK(order == expected);
}

// An InMemoryStatusSink seen through a narrower interface: `Batches` false
// hides async_publish_some (a sink written before batches existed). Each
// call's number of statuses is recorded.
template <bool Batches>
struct CountingSink {
  core::InMemoryStatusSink& sink;
  std::vector<std::size_t> calls;

  template <class Token>
  auto async_publish(const core::JobResult& r, Token&& token) {
    calls.push_back(1);
    return sink.async_publish(r, std::forward<Token>(token));
  }
  template <class Token>
    requires Batches
  auto async_publish_some(std::span<const core::JobResult* const> rs, Token&& token) {
    calls.push_back(rs.size());
    return sink.async_publish_some(rs, std::forward<Token>(token));
  }
};
static_assert(!core::PublishesBatches<CountingSink<false>> && core::PublishesBatches<CountingSink<true>>);

TEST_CASE("Dispatcher: statuses that finish together go out in one call, a refused one alone again, "
          "and a sink without batches gets one call per status",
          "[dispatcher]") {
  const bool batches = GENERATE(false, true);
  Fixture f;
  Held held;
  f.add_worker("w1", 8, {}, held.runner());
  f.publish(8);
  f.sink.hold_confirms(true);
  f.sink.fail_next(1);  // the first status the sink sees is refused
  core::DispatcherOptions options;
  options.publish_retry_initial = 1ms;
  auto run = [&](auto& sink) {
    core::Dispatcher<core::InMemoryQueue, LoopbackTransport, std::decay_t<decltype(sink)>> d(
        f.io.get_executor(), f.queue, f.transport, sink, f.pool, options);
    d.start();
    REQUIRE(run_until(f.io, [&] { return held.calls.size() == 8; }));
    held.succeed_all();  // eight results reach the strand at once
    // Without batches the refused one may already be back (held): seven or eight.
    REQUIRE(run_until(f.io, [&] { return d.stats().succeeded == 8 && f.sink.held() >= 7; }));
    run_ready(f.io);
    CHECK(f.queue.acked() == 0);  // nothing confirmed yet
    if (batches) {
      CHECK(sink.calls == std::vector<std::size_t>{8});
      CHECK(f.sink.held() == 7);  // the batch answers once all eight are settled: no retry yet
    }
    f.sink.hold_confirms(false);
    f.sink.confirm_held();
    REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 8; }));
    CHECK(f.queue.unacked() == 0);
    // The refused one went again on its own after the backoff.
    if (batches) {
      CHECK(sink.calls == std::vector<std::size_t>{8, 1});
    } else {
      CHECK(sink.calls == std::vector<std::size_t>(9, 1));
    }
  };
  if (batches) {
    CountingSink<true> sink{f.sink, {}};
    run(sink);
  } else {
    CountingSink<false> sink{f.sink, {}};
    run(sink);
  }
  const auto counts = f.status_counts();
  CHECK(counts.size() == 8);
  for (const auto& [id, n] : counts) CHECK(n == 1);
}

// The running jobs' deadlines share one timer, set for the earliest: a job
// with a shorter timeout that starts later must move it earlier, and a job
// that finished must leave no deadline behind.
TEST_CASE("Dispatcher: a later job with a shorter timeout is reported lost first, the longer one keeps running",
          "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 3, {}, held.runner());
  core::DispatcherOptions options;
  options.run_timeout_grace = 10ms;
  auto d = f.start(options);
  auto slow = make_job("slow");
  slow.timeout = 60s;
  f.queue.publish(slow);
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  auto done = make_job("done");
  done.timeout = 20ms;
  f.queue.publish(done);
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 2; }));
  core::JobResult succeeded;
  succeeded.success = true;
  CHECK(held.calls[1].complete(succeeded));  // finished within its timeout: no loss later
  auto quick = make_job("quick");
  quick.timeout = 30ms;
  f.queue.publish(quick);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 2; }, 3s));
  REQUIRE(f.status("done"));
  CHECK(f.status("done")->success);
  auto r = f.status("quick");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK_THAT(r->error, Catch::Contains("timeout of 30 ms"));
  CHECK(d->stats().lost == 1);
  CHECK_FALSE(f.status("slow"));  // still running: its deadline is a minute away
  CHECK(held.calls[0].complete(succeeded));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 3; }));
  CHECK(f.status("slow")->success);
}

TEST_CASE("RecentIds: keeps the last ids put, within capacity and ttl, through puts again and erases",
          "[dispatcher]") {
  core::detail::RecentIds<int> ids(3, std::chrono::minutes(1));
  for (int i = 0; i < 5; ++i) ids.put("j" + std::to_string(i), i);
  CHECK_FALSE(ids.find("j0"));
  CHECK_FALSE(ids.find("j1"));
  REQUIRE(ids.find("j2"));
  CHECK(*ids.find("j4") == 4);
  ids.put("j2", 20);  // put again: the newest now
  ids.put("j5", 5);   // j3 goes, not j2
  CHECK_FALSE(ids.find("j3"));
  REQUIRE(ids.find("j2"));
  CHECK(*ids.find("j2") == 20);
  ids.erase("j4");
  CHECK_FALSE(ids.find("j4"));
  ids.erase("j4");    // twice: nothing
  ids.put("j6", 6);   // j2, j5, j6 are the three live ids; j4's tombstone does not count
  CHECK(*ids.find("j2") == 20);
  CHECK(*ids.find("j5") == 5);
  ids.put("j4", 40);  // back after its erase
  CHECK(*ids.find("j4") == 40);
  CHECK_FALSE(ids.find("j2"));
  // One id put again and again: its places count against twice the
  // capacity, so the others go, and nothing points at a removed entry.
  for (int i = 0; i < 100; ++i) ids.put("again", i);
  REQUIRE(ids.find("again"));
  CHECK(*ids.find("again") == 99);
  CHECK_FALSE(ids.find("j4"));
  ids.put("j7", 7);
  CHECK(*ids.find("j7") == 7);

  core::detail::RecentIds<int> none(0, std::chrono::minutes(1));
  none.put("x", 1);
  CHECK_FALSE(none.find("x"));

  core::detail::RecentIds<int> brief(10, std::chrono::milliseconds(1));
  brief.put("y", 1);
  const auto put_at = std::chrono::steady_clock::now();
  // The ttl itself is under test: time has to pass (a millisecond).
  while (std::chrono::steady_clock::now() - put_at < std::chrono::milliseconds(2)) std::this_thread::yield();
  CHECK_FALSE(brief.find("y"));
}

TEST_CASE("RecentIds: its hash index agrees with a plain model through 200,000 random puts, finds and erases",
          "[dispatcher]") {
  // The model: the same rules over a std::map, no hashing. Enough ids for
  // the index to grow many times, long probe runs, and removals that move
  // entries back; the ttl (an hour) never passes.
  constexpr std::size_t capacity = 300;
  struct Model {
    struct Record {
      std::string id;
      int value;
      bool erased = false;
      bool current = true;
    };
    std::deque<Record> order;
    std::map<std::string, std::size_t> current;  // id -> sequence number in `order`
    std::size_t base = 0, live = 0;

    void put(const std::string& id, int value) {
      if (auto it = current.find(id); it != current.end()) {
        Record& earlier = order[it->second - base];
        earlier.current = false;
        if (earlier.erased) ++live;
      } else {
        ++live;
      }
      order.push_back(Record{id, value});
      current[id] = base + order.size() - 1;
      while (live > capacity || order.size() > 2 * capacity) {
        const Record& oldest = order.front();
        if (oldest.current) {
          if (!oldest.erased) --live;
          current.erase(oldest.id);
        }
        order.pop_front();
        ++base;
      }
    }
    std::optional<int> find(const std::string& id) const {
      auto it = current.find(id);
      if (it == current.end() || order[it->second - base].erased) return std::nullopt;
      return order[it->second - base].value;
    }
    void erase(const std::string& id) {
      auto it = current.find(id);
      if (it == current.end() || order[it->second - base].erased) return;
      order[it->second - base].erased = true;
      --live;
    }
  };
  Model model;
  core::detail::RecentIds<int> ids(capacity, std::chrono::hours(1));
  std::mt19937 random(20261207);
  std::size_t mismatches = 0, found = 0;
  for (int op = 0; op < 200'000; ++op) {
    const std::string id = "job-" + std::to_string(random() % 2000);
    switch (random() % 4) {
      case 0:
      case 1:
        ids.put(id, op);
        model.put(id, op);
        break;
      case 2:
        ids.erase(id);
        model.erase(id);
        break;
      default: {
        const int* got = ids.find(id);
        const auto want = model.find(id);
        found += want.has_value();
        if ((got == nullptr) != !want.has_value() || (got && *got != *want)) ++mismatches;
      }
    }
  }
  CHECK(mismatches == 0);
  CHECK(found > 1000);  // the finds did find something: the model is not empty all along
  for (int i = 0; i < 2000; ++i) {
    const std::string id = "job-" + std::to_string(i);
    const int* got = ids.find(id);
    const auto want = model.find(id);
    CHECK((got == nullptr) == !want.has_value());
    if (got && want) CHECK(*got == *want);
  }
}

TEST_CASE("DeadlineHeap: the earliest deadline first, after sets, moves and removals", "[dispatcher]") {
  struct Item {
    int id;
    std::array<std::size_t, 2> deadline_places = core::detail::DeadlineHeap<Item, 2>::unplaced();
  };
  using Heap = core::detail::DeadlineHeap<Item, 2>;
  const auto t0 = Heap::Clock::time_point{};
  auto at = [t0](int ms) { return t0 + std::chrono::milliseconds(ms); };
  std::vector<Item> items;
  for (int i = 0; i < 50; ++i) items.push_back(Item{i});
  Heap heap;
  // Kind 0 at 7*i mod 50 ms; kind 1 of the even ones at 1000 + i.
  for (auto& item : items) {
    heap.set(item, 0, at((item.id * 7) % 50));
    if (item.id % 2 == 0) heap.set(item, 1, at(1000 + item.id));
  }
  CHECK(heap.size() == 75);
  heap.set(items[3], 0, at(2000));  // moved later: item 3's kind 0 was at 21
  heap.set(items[4], 1, at(-5));    // moved earlier
  heap.remove(items[10], 0);        // was at 20
  heap.remove(items[10], 0);        // twice does nothing
  heap.remove(items[11], 1);        // never set: nothing
  CHECK(heap.size() == 74);
  std::vector<std::pair<int, std::size_t>> order;
  auto last = at(-1000);
  while (!heap.empty()) {
    const auto e = heap.pop();
    CHECK(e.at >= last);
    last = e.at;
    CHECK(e.item->deadline_places[e.kind] == Heap::npos);
    order.emplace_back(e.item->id, e.kind);
  }
  REQUIRE(order.size() == 74);
  CHECK(order.front() == std::pair<int, std::size_t>{4, 1});
  CHECK(order.back() == std::pair<int, std::size_t>{3, 0});
  CHECK(std::find(order.begin(), order.end(), std::pair<int, std::size_t>{10, 0}) == order.end());
  for (auto& item : items) heap.set(item, 0, at(item.id));
  heap.clear();
  CHECK(heap.empty());
  for (const auto& item : items) CHECK(item.deadline_places == Heap::unplaced());
}

TEST_CASE("Dispatcher: at the stop deadline a job whose status is being published is not handed back",
          "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 2, {}, held.runner());
  f.queue.publish(make_job("publishing"));
  f.queue.publish(make_job("running"));
  auto d = f.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 2; }));
  f.sink.hold_confirms(true);
  for (auto& call : held.calls)
    if (call.job().id == "publishing") call.complete(core::JobResult{});
  REQUIRE(run_until(f.io, [&] { return f.sink.held() == 1; }));

  std::error_code result;
  REQUIRE(f.stop(*d, 30ms, result));
  CHECK(result == core::errc::stop_deadline_exceeded);
  CHECK(f.queue.ready() == 1);  // only the job without a result is handed back
  CHECK(f.queue.unacked() == 1);
  CHECK(f.sink.confirm_held() == 1);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.queue.unacked() == 0);
}

TEST_CASE("Dispatcher: a worker that deregisters while running a job delivers its result, not a loss",
          "[dispatcher]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 1, {}, held.runner());
  f.queue.publish(make_job("last"));
  auto d = f.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  REQUIRE(f.pool.deregister("w1", "graceful stop"));
  run_ready(f.io);
  CHECK(f.pool.find("w1"));  // still there, draining, until its job completed
  held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.status("last")->success);
  CHECK(d->stats().lost == 0);
  REQUIRE(run_until(f.io, [&] { return !f.pool.find("w1"); }));
}

namespace {
// A transport that watches its runs itself (as a heartbeat on each stream does).
struct WatchingTransport : LoopbackTransport {
  using LoopbackTransport::LoopbackTransport;
  static constexpr bool monitors_runs = true;
};
}  // namespace

TEST_CASE("Dispatcher: with a transport that watches its runs, missed pings do not fail a job whose stream lives",
          "[dispatcher]") {
  asio::io_context io;
  core::InMemoryQueue queue(io.get_executor());
  WatchingTransport transport(io.get_executor());
  core::InMemoryStatusSink sink(io.get_executor());
  core::WorkerPool pool(io.get_executor());
  Held held;
  transport.add_endpoint("loopback:w1", 1, held.runner());
  REQUIRE(pool.register_worker(make_worker("w1")));
  REQUIRE(pool.mark_alive("w1"));
  core::Dispatcher<core::InMemoryQueue, WatchingTransport, core::InMemoryStatusSink> d(io.get_executor(), queue,
                                                                                      transport, sink, pool);
  d.start();
  queue.publish(make_job("alive"));
  REQUIRE(run_until(io, [&] { return held.calls.size() == 1; }));
  REQUIRE(pool.mark_dead("w1", "missed 2 pings in a row"));
  run_ready(io);
  CHECK(sink.size() == 0);
  held.succeed_all();
  REQUIRE(run_until(io, [&] { return queue.acked() == 1; }));
  CHECK(sink.results().at(0).success);
  CHECK(d.stats().lost == 0);
}

namespace {

core::CancelOutcome cancel(Fixture& f, TestDispatcher& d, const std::string& id, const std::string& reason = "by test") {
  std::optional<core::CancelOutcome> outcome;
  d.async_cancel(id, reason, [&](core::CancelOutcome o) { outcome = o; });
  REQUIRE(run_until(f.io, [&] { return outcome.has_value(); }));
  return *outcome;
}

}  // namespace

TEST_CASE("Dispatcher: a job cancelled while it waits for a worker is settled cancelled without running",
          "[dispatcher][cancel]") {
  Fixture f;
  Held held;
  // w1 runs job-0; job-1 (for w1's label too) is taken while w2 is free and waits for w1.
  f.add_worker("w1", 1, {{"pool", "a"}}, held.runner());
  f.add_worker("w2", 1, {{"pool", "b"}});
  f.queue.publish(make_job("job-0", {{"pool", "a"}}));
  f.queue.publish(make_job("job-1", {{"pool", "a"}}));
  auto d = f.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1 && f.queue.unacked() == 2; }));
  CHECK(cancel(f, *d, "job-1", "superseded") == core::CancelOutcome::cancelled);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  auto r = f.status("job-1");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK(r->cancelled);
  CHECK_THAT(r->error, Catch::Contains("cancelled before it ran") && Catch::Contains("superseded"));

  held.succeed_all();  // the running one is untouched
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 2; }));
  CHECK(f.transport.runs_started("loopback:w1") == 1);
  auto counts = f.status_counts();
  CHECK(counts == std::map<std::string, int>{{"job-0", 1}, {"job-1", 1}});
  CHECK(f.status("job-0")->success);
  CHECK_FALSE(f.status("job-0")->cancelled);
  CHECK(d->stats().cancelled == 1);
  CHECK(d->stats().in_flight == 0);
  // A second cancel of it finds it finished.
  CHECK(cancel(f, *d, "job-1") == core::CancelOutcome::finished);
  run_ready(f.io);
  CHECK(f.sink.size() == 2);
}

TEST_CASE("Dispatcher: a running job cancelled is stopped on its worker and gets one cancelled status",
          "[dispatcher][cancel]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 1, {}, held.runner());
  f.publish(1);
  auto d = f.start();
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  CHECK(cancel(f, *d, "job-0", "wrong branch") == core::CancelOutcome::stopping);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  auto r = f.status("job-0");
  REQUIRE(r);
  CHECK_FALSE(r->success);
  CHECK(r->cancelled);
  CHECK_THAT(r->error, Catch::Contains("cancelled while running on worker w1") && Catch::Contains("wrong branch"));
  CHECK_FALSE(held.calls[0].complete(core::JobResult{}));  // the run was stopped on the transport
  CHECK(f.transport.running("loopback:w1") == 0);
  CHECK(f.sink.size() == 1);
  CHECK(d->stats().cancelled == 1);
  CHECK(d->stats().lost == 0);
  // The slot is free again: the next job runs.
  f.queue.publish(make_job("next"));
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 2; }));
  held.calls.erase(held.calls.begin());
  held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 2; }));
  CHECK(f.status("next")->success);
}

TEST_CASE("Dispatcher: a cancel of a finished job leaves its one status alone", "[dispatcher][cancel]") {
  Fixture f;
  f.add_worker("w1");
  f.publish(1);
  auto d = f.start();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(cancel(f, *d, "job-0") == core::CancelOutcome::finished);
  run_ready(f.io);
  CHECK(f.sink.size() == 1);
  CHECK(f.status("job-0")->success);
  CHECK_FALSE(f.status("job-0")->cancelled);
  CHECK(d->stats().cancelled == 0);
}

TEST_CASE("Dispatcher: a cancel that overtakes its job settles it cancelled on arrival, within the record's bounds",
          "[dispatcher][cancel]") {
  Fixture f;
  f.add_worker("w1");
  core::DispatcherOptions options;
  options.cancel_record_size = 2;
  auto d = f.start(options);
  CHECK(cancel(f, *d, "early", "never mind") == core::CancelOutcome::remembered);
  f.queue.publish(make_job("early"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  auto r = f.status("early");
  REQUIRE(r);
  CHECK(r->cancelled);
  CHECK_THAT(r->error, Catch::Contains("cancelled before it ran") && Catch::Contains("never mind"));
  CHECK(f.transport.runs_started("loopback:w1") == 0);

  // Used up: a later delivery of that id is a duplicate of a finished job, not a new cancel.
  f.queue.publish(make_job("early"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 2; }));
  CHECK(f.sink.size() == 1);

  // Bounded: the oldest remembered cancel is forgotten once more are remembered.
  CHECK(cancel(f, *d, "a") == core::CancelOutcome::remembered);
  CHECK(cancel(f, *d, "b") == core::CancelOutcome::remembered);
  CHECK(cancel(f, *d, "c") == core::CancelOutcome::remembered);
  f.queue.publish(make_job("a"));
  f.queue.publish(make_job("c"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 4; }));
  CHECK(f.status("a")->success);  // forgotten: it ran
  CHECK(f.status("c")->cancelled);
  CHECK(f.transport.runs_started("loopback:w1") == 1);
}

TEST_CASE("Dispatcher: a remembered cancel expires after its ttl", "[dispatcher][cancel]") {
  Fixture f;
  f.add_worker("w1");
  core::DispatcherOptions options;
  options.cancel_record_ttl = 20ms;
  auto d = f.start(options);
  CHECK(cancel(f, *d, "late") == core::CancelOutcome::remembered);
  bool expired = false;
  asio::steady_timer timer(f.io, 40ms);
  timer.async_wait([&](std::error_code) { expired = true; });
  REQUIRE(run_until(f.io, [&] { return expired; }));
  f.queue.publish(make_job("late"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.status("late")->success);
  CHECK(f.transport.runs_started("loopback:w1") == 1);
}

// ---------------------------------------------------------------------------
// Builds outlive their orchestrator (issue 13)

TEST_CASE("Dispatcher: a job a worker carries from before goes to that worker, which attaches to it",
          "[dispatcher][carried]") {
  Fixture f;
  f.add_worker("free", 2);
  // Registered, carrying job "c", not answering yet (a worker failing over).
  f.transport.add_endpoint("loopback:carrier", 1, {});
  auto carrier = make_worker("carrier", 1);
  carrier.incarnation = f.transport.incarnation(carrier.address);
  REQUIRE(f.pool.register_worker(carrier, {"c"}));
  f.queue.publish(redelivered_job("c"));
  f.queue.publish(make_job("new"));
  core::DispatcherOptions options;
  options.carrier_wait = 60s;
  auto d = f.start(options);
  // "new" runs at once; "c" waits for its carrier instead of going to the free worker.
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.status("new"));
  CHECK_FALSE(f.status("c"));
  CHECK(f.transport.runs_started("loopback:free") == 1);
  CHECK(f.queue.unacked() == 1);

  REQUIRE(f.pool.mark_alive("carrier"));  // it answers: the job goes to it
  REQUIRE(run_until(f.io, [&] { return f.status("c").has_value(); }));
  CHECK(f.status("c")->success);
  CHECK(f.status("c")->worker_id == "carrier");
  CHECK(f.transport.runs_started("loopback:free") == 1);
  CHECK(d->stats().adopted == 1);
}

TEST_CASE("Dispatcher: a redelivered job nobody carries is placed once the carrier wait ends",
          "[dispatcher][carried]") {
  Fixture f;
  f.add_worker("w1");
  f.queue.publish(redelivered_job("r"));
  core::DispatcherOptions options;
  options.carrier_wait = 30ms;
  auto d = f.start(options);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.status("r")->success);
  CHECK(f.transport.runs_started("loopback:w1") == 1);
  CHECK(d->stats().adopted == 0);
}

TEST_CASE("Dispatcher: a stop hands back a job waiting for its carrier, and hands running jobs over",
          "[dispatcher][carried]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 2, {}, held.runner());
  f.queue.publish(make_job("running"));
  f.queue.publish(redelivered_job("waiting"));
  core::DispatcherOptions options;
  options.carrier_wait = 60s;
  auto d = f.start(options);
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1 && d->stats().received == 2; }));
  std::error_code ec;
  REQUIRE(f.stop(*d, 20ms, ec));
  CHECK(ec == core::errc::stop_deadline_exceeded);
  CHECK(d->stats().handed_back == 2);
  CHECK(f.queue.unacked() == 0);
  CHECK(f.sink.size() == 0);
}

TEST_CASE("Dispatcher: a redelivered job a peer still runs waits for the peer and is acked once it settled",
          "[dispatcher][peers]") {
  Fixture f;
  f.add_worker("w1");
  auto held_job = redelivered_job("held");
  f.queue.publish(held_job);
  core::DispatcherOptions options;
  options.carrier_wait = 30ms;
  options.peer_hold = 60s;
  auto d = f.start(options);
  REQUIRE(run_until(f.io, [&] { return d->stats().received == 1; }));
  // The peer, reconnected, says it runs the job: the carrier wait ends and it still waits.
  d->held_elsewhere({"held"});
  asio::steady_timer past_wait(f.io, 100ms);
  bool waited = false;
  past_wait.async_wait([&](std::error_code) { waited = true; });
  REQUIRE(run_until(f.io, [&] { return waited; }));
  CHECK(f.transport.runs_started("loopback:w1") == 0);
  CHECK(f.queue.unacked() == 1);
  // Its status is out: acked here without a run or a status of its own.
  d->settled_elsewhere({"held"});
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.transport.runs_started("loopback:w1") == 0);
  CHECK(f.sink.size() == 0);
  CHECK(d->stats().settled_elsewhere == 1);
  CHECK(d->stats().in_flight == 0);
  // A later redelivery of it is acked unrun; the same id published anew (not
  // redelivered) runs: a peer's word never drops a job that was not its own.
  f.queue.publish(held_job);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 2; }));
  CHECK(f.transport.runs_started("loopback:w1") == 0);
  CHECK(f.sink.size() == 0);
  CHECK(d->stats().settled_elsewhere == 2);
  d->settled_elsewhere({"fresh"});
  f.queue.publish(make_job("fresh"));
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 3; }));
  CHECK(f.transport.runs_started("loopback:w1") == 1);
  CHECK(f.status("fresh")->success);
}

TEST_CASE("Dispatcher: a job whose peer falls silent runs once peer_hold has passed", "[dispatcher][peers]") {
  Fixture f;
  f.add_worker("w1");
  auto held_job = redelivered_job("held");
  core::DispatcherOptions options;
  options.carrier_wait = 30ms;
  options.peer_hold = 150ms;
  auto d = f.start(options);
  d->held_elsewhere({"held"});  // said before the redelivery came, then never again
  f.queue.publish(held_job);
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.transport.runs_started("loopback:w1") == 1);
  CHECK(f.status("held")->success);
  CHECK(d->stats().settled_elsewhere == 0);
}

TEST_CASE("Dispatcher: a peer's settlement leaves a job running here alone", "[dispatcher][peers]") {
  Fixture f;
  Held held;
  f.add_worker("w1", 1, {}, held.runner());
  f.queue.publish(make_job("mine"));
  core::DispatcherOptions options;
  options.carrier_wait = 30ms;
  options.peer_hold = 60s;
  auto d = f.start(options);
  REQUIRE(run_until(f.io, [&] { return held.calls.size() == 1; }));
  d->settled_elsewhere({"mine"});  // reaches the strand before the result (FIFO)
  held.succeed_all();
  REQUIRE(run_until(f.io, [&] { return f.queue.acked() == 1; }));
  CHECK(f.status("mine")->success);
  CHECK(d->stats().settled_elsewhere == 0);
}

TEST_CASE("Dispatcher: a redelivery whose worker registered with a peer goes back to the source for it",
          "[dispatcher][peers]") {
  Fixture f;
  f.add_worker("w1");
  auto carried = redelivered_job("carried");
  core::DispatcherOptions options;
  options.carrier_wait = 60s;
  options.peer_hold = 60s;
  options.pass_back_delay = 10ms;
  auto d = f.start(options);
  f.queue.publish(carried);
  REQUIRE(run_until(f.io, [&] { return d->stats().received == 1; }));
  d->carried_elsewhere({"carried"});  // heard while it waits for its carrier
  REQUIRE(run_until(f.io, [&] { return d->stats().passed_back == 1; }));
  // Back in the queue, redelivered: passed back again (the peer holds its worker), never run here.
  REQUIRE(run_until(f.io, [&] { return d->stats().passed_back >= 3; }));
  CHECK(f.transport.runs_started("loopback:w1") == 0);
  CHECK(f.sink.size() == 0);
  CHECK(f.queue.acked() == 0);
  // Not redelivered (published anew): it runs; the peer's word is only about redeliveries.
  f.queue.publish(make_job("anew"));
  d->carried_elsewhere({"anew"});
  REQUIRE(run_until(f.io, [&] { return f.status("anew").has_value(); }));
  CHECK(f.transport.runs_started("loopback:w1") == 1);
}
