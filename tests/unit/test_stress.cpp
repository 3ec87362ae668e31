// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// Thousands of jobs through Dispatcher + WorkerPool + HealthMonitor on several
// threads while workers are killed, hang, restart, leave, drain and come back
// at random. Afterwards every job has exactly one final status, every slot is
// back, and nothing is in flight. CI also runs this under ThreadSanitizer.

#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/health_monitor.hpp>
#include <blacktree/core/in_memory.hpp>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <catch2/catch.hpp>

#include <cstdlib>
#include <functional>
#include <future>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "../support/test_support.hpp"

namespace core = blacktree::core;
using namespace std::chrono_literals;
using blacktree::test::make_job;
using blacktree::test::make_worker;
using core::LoopbackTransport;

namespace {

struct World {
  asio::io_context& io;
  core::WorkerPool& pool;
  LoopbackTransport& transport;
  std::vector<core::WorkerInfo> workers;
};

// Chaos: one random act every half millisecond on its own strand (so its RNG
// needs no lock) until `remaining_acts` runs out or three quarters of the jobs
// are done. Every pool and transport call it makes is thread-safe and never
// re-enters.
struct Chaos {
  World* world = nullptr;
  std::mt19937 rng{20261122};
  std::size_t acts = 0;
  std::size_t remaining_acts = 0;
  std::map<std::string, int> tally;

  void act() {
    if (remaining_acts == 0) return;
    --remaining_acts;
    ++acts;
    const auto& w = world->workers[rng() % world->workers.size()];
    switch (rng() % 7) {
      case 0:
        world->transport.set_mode(w.address, LoopbackTransport::Mode::unreachable);
        ++tally["kill"];
        break;
      case 1:
        world->transport.set_mode(w.address, LoopbackTransport::Mode::silent);
        ++tally["hang"];
        break;
      case 2:
      case 3:
        world->transport.set_mode(w.address, LoopbackTransport::Mode::up);
        ++tally["revive"];
        break;
      case 4:
        world->transport.restart(w.address);
        ++tally["restart"];
        break;
      case 5:
        if (world->pool.find(w.id)) {
          (void)world->pool.deregister(w.id, "chaos: leaving");
          ++tally["deregister"];
        } else {
          auto info = w;
          info.incarnation = world->transport.incarnation(w.address);
          (void)world->pool.register_worker(info);
          ++tally["register"];
        }
        break;
      default:
        if (rng() % 2) {
          (void)world->pool.drain(w.id);
          ++tally["drain"];
        } else {
          (void)world->pool.resume(w.id);
          ++tally["resume"];
        }
    }
  }
};

std::size_t stress_jobs() {
  if (const char* env = std::getenv("BLACKTREE_STRESS_JOBS")) return std::strtoul(env, nullptr, 10);
  return 5000;
}

}  // namespace

TEST_CASE("Stress: every job gets exactly one status while workers come and go", "[stress]") {
  const std::size_t jobs = stress_jobs();
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  core::InMemoryQueue queue(io.get_executor());
  LoopbackTransport transport(io.get_executor());
  core::InMemoryStatusSink sink(io.get_executor());
  core::WorkerPool pool(io.get_executor());

  World world{io, pool, transport, {}};
  std::size_t total_capacity = 0;
  for (int i = 0; i < 16; ++i) {
    const std::string id = "w" + std::to_string(i);
    const std::uint32_t capacity = 1 + i % 3;
    total_capacity += capacity;
    auto info = make_worker(id, capacity, {{"region", i % 2 ? "us" : "eu"}});
    // Each job finishes after a short asynchronous wait; one in twenty fails.
    transport.add_endpoint(info.address, capacity, [&io](LoopbackTransport::Call call) {
      const auto h = std::hash<std::string>{}(call.job().id);
      auto timer = std::make_shared<asio::steady_timer>(io, std::chrono::microseconds(h % 2000));
      call.progress("building", "step 1/1");
      timer->async_wait([timer, call, h](std::error_code) {
        core::JobResult r;
        r.success = h % 20 != 0;
        if (!r.success) r.error = "build failed";
        call.complete(r);
      });
    });
    info.incarnation = transport.incarnation(info.address);
    world.workers.push_back(info);
    REQUIRE(pool.register_worker(info));
  }

  auto chaos = std::make_shared<Chaos>();
  chaos->world = &world;
  chaos->remaining_acts = 2000;

  core::HealthMonitor<LoopbackTransport> monitor(io.get_executor(), transport, pool, {5ms, 3ms, 2});
  core::DispatcherOptions options;
  options.max_attempts = 4;
  core::Dispatcher<core::InMemoryQueue, LoopbackTransport, core::InMemoryStatusSink> dispatcher(
      io.get_executor(), queue, transport, sink, pool, options);

  for (std::size_t i = 0; i < jobs; ++i) {
    core::Labels labels;
    if (i % 10 == 0) labels = {{"region", "eu"}};
    if (i % 10 == 1) labels = {{"region", "us"}};
    queue.publish(make_job("job-" + std::to_string(i), labels));
  }

  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) threads.emplace_back([&io] { io.run(); });
  struct Joiner {
    asio::io_context& io;
    std::vector<std::thread>& threads;
    ~Joiner() {
      io.stop();
      for (auto& t : threads) t.join();
    }
  } joiner{io, threads};

  monitor.start();
  dispatcher.start();

  // Phase 1: chaos while the jobs flow.
  auto chaos_strand = asio::make_strand(io);
  asio::steady_timer chaos_timer(chaos_strand);
  std::promise<std::size_t> chaos_over;  // statuses published when chaos ended
  std::function<void()> next_act = [&] {
    if (chaos->remaining_acts == 0 || sink.size() >= jobs * 3 / 4) {
      // Phase 2: heal everything.
      for (const auto& w : world.workers) {
        transport.set_mode(w.address, LoopbackTransport::Mode::up);
        // Registering again also keeps a worker that is leaving (deregistered
        // with jobs in flight), which would otherwise go with its last job.
        auto info = w;
        info.incarnation = transport.incarnation(w.address);
        (void)pool.register_worker(info);
        (void)pool.resume(w.id);
      }
      chaos_over.set_value(sink.size());
      return;
    }
    chaos->act();
    chaos_timer.expires_after(500us);
    chaos_timer.async_wait([&](std::error_code ec) {
      if (!ec) next_act();
    });
  };
  asio::post(chaos_strand, next_act);
  auto statuses_during_chaos = chaos_over.get_future();
  // What is stuck, should anything be.
  auto describe = [&] {
    const auto st = dispatcher.stats();
    std::ostringstream os;
    os << "statuses " << sink.size() << "/" << jobs << ", received " << st.received << ", in flight " << st.in_flight
       << ", lost " << st.lost << ", not accepted " << st.not_accepted << "; queue ready " << queue.ready()
       << ", unacked " << queue.unacked() << "; pool waiting " << pool.waiting() << ", alive capacity "
       << pool.alive_capacity() << "; workers:";
    for (const auto& w : pool.snapshot())
      os << " " << w.info->id << "=" << core::to_string(w.state) << "/" << w.in_use << "(running "
         << transport.running(w.info->address) << ")";
    return os.str();
  };
  // Deadlines add up to less than ctest's 120 s, so a hang fails here with a
  // description instead of being killed without one.
  REQUIRE(statuses_during_chaos.wait_for(30s) == std::future_status::ready);
  const std::size_t done_when_healed = statuses_during_chaos.get();
  INFO("statuses when chaos ended: " << done_when_healed << " of " << jobs);
  CHECK(done_when_healed < jobs);  // chaos overlapped the job flow

  if (!sink.wait_for(jobs, 40s)) FAIL_CHECK("not every job got a status; " << describe());
  REQUIRE(sink.size() >= jobs);

  // Settling (acks, slots) happens just after the last confirm: wait on it.
  std::promise<void> settled;
  std::function<void()> check_settled = [&] {
    // Healed too: a worker the last chaos act killed is alive again once the
    // health monitor's next pings reach it.
    bool all_back = queue.acked() == jobs && dispatcher.stats().in_flight == 0 &&
                    pool.alive_capacity() == total_capacity;
    for (const auto& w : pool.snapshot())
      all_back = all_back && w.state == core::WorkerState::free && w.in_use == 0;
    if (all_back) {
      settled.set_value();
      return;
    }
    auto timer = std::make_shared<asio::steady_timer>(io, 5ms);
    timer->async_wait([timer, &check_settled](std::error_code) { check_settled(); });
  };
  asio::post(io, check_settled);
  if (settled.get_future().wait_for(20s) != std::future_status::ready)
    FAIL("statuses are out but the rest did not settle; " << describe());

  INFO("chaos acts: " << chaos->acts);
  CHECK(chaos->acts >= 20);
  const auto results = sink.results();
  std::map<std::string, int> per_job;
  std::size_t lost = 0, succeeded = 0;
  for (const auto& r : results) {
    ++per_job[r.job_id];
    if (r.success) ++succeeded;
    if (r.error.find("was lost") != std::string::npos) ++lost;
  }
  CHECK(results.size() == jobs);
  CHECK(per_job.size() == jobs);
  for (const auto& [id, n] : per_job) REQUIRE(n == 1);
  CHECK(queue.unacked() == 0);
  CHECK(queue.ready() == 0);
  CHECK(queue.dead_letters().empty());
  // The window, plus the jobs that waited aside for a busy region.
  CHECK(queue.max_unacked() <= total_capacity + options.max_waiting);
  CHECK(pool.alive_capacity() == total_capacity);
  CHECK(pool.waiting() == 0);
  const auto stats = dispatcher.stats();
  CHECK(stats.in_flight == 0);
  CHECK(stats.received == jobs);
  CHECK(stats.succeeded + stats.failed == jobs);
  CHECK(succeeded == stats.succeeded);
  CHECK(lost == stats.lost);
  // Labelled jobs only ever ran in their region.
  for (const auto& r : results) {
    if (!r.success || r.worker_id.empty()) continue;
    const auto index = std::stoul(r.job_id.substr(4));
    const auto worker = std::stoul(r.worker_id.substr(1));
    if (index % 10 == 0) CHECK(worker % 2 == 0);
    if (index % 10 == 1) CHECK(worker % 2 == 1);
  }

  monitor.stop();
  std::promise<std::error_code> stopped;
  dispatcher.async_stop(1s, [&](std::error_code ec) { stopped.set_value(ec); });
  auto stop_result = stopped.get_future();
  REQUIRE(stop_result.wait_for(10s) == std::future_status::ready);
  CHECK_FALSE(stop_result.get());
}
