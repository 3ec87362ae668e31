// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0

#include <blacktree/core/worker_pool.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <deque>
#include <optional>
#include <set>

#include "../support/test_support.hpp"

namespace core = blacktree::core;
using blacktree::test::make_worker;
using blacktree::test::run_ready;
using blacktree::test::run_until;
using core::WorkerPool;
using core::WorkerState;

namespace {

// One pending or completed acquire.
struct Grant {
  bool done = false;
  std::error_code ec;
  WorkerPool::Lease lease;
  std::string worker() const { return lease ? lease.worker().id : std::string{}; }
};

std::shared_ptr<Grant> acquire(WorkerPool& pool, core::Labels labels = {}, std::uint8_t priority = 0) {
  auto grant = std::make_shared<Grant>();
  pool.async_acquire(std::move(labels), priority, [grant](std::error_code ec, WorkerPool::Lease lease) {
    grant->done = true;
    grant->ec = ec;
    grant->lease = std::move(lease);
  });
  return grant;
}

void add_alive(WorkerPool& pool, const std::string& id, std::uint32_t capacity = 1, core::Labels labels = {}) {
  REQUIRE(pool.register_worker(make_worker(id, capacity, std::move(labels))));
  REQUIRE(pool.mark_alive(id));
}

// An acquire that was served: the slot is held.
std::shared_ptr<Grant> held_slot(asio::io_context& io, WorkerPool& pool) {
  auto grant = acquire(pool);
  REQUIRE(run_until(io, [&] { return grant->done; }));
  return grant;
}

WorkerState state_of(const WorkerPool& pool, const std::string& id) {
  auto snapshot = pool.find(id);
  REQUIRE(snapshot);
  return snapshot->state;
}

}  // namespace

TEST_CASE("WorkerPool: a registered worker takes jobs only once it is alive", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  REQUIRE(pool.register_worker(make_worker("w1")));
  CHECK(state_of(pool, "w1") == WorkerState::registering);
  CHECK(pool.alive_capacity() == 0);

  auto grant = acquire(pool);
  run_ready(io);
  CHECK_FALSE(grant->done);  // registering workers are not handed out

  REQUIRE(pool.mark_alive("w1"));
  REQUIRE(run_until(io, [&] { return grant->done; }));
  CHECK_FALSE(grant->ec);
  CHECK(grant->worker() == "w1");
  CHECK(state_of(pool, "w1") == WorkerState::busy);
  CHECK(pool.alive_capacity() == 1);
}

TEST_CASE("WorkerPool: registration is validated", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  auto no_id = make_worker("");
  CHECK(pool.register_worker(no_id).error().code() == core::errc::invalid_worker);
  auto no_address = make_worker("w");
  no_address.address.clear();
  CHECK(pool.register_worker(no_address).error().code() == core::errc::invalid_worker);
  CHECK(pool.register_worker(make_worker("w", 0)).error().code() == core::errc::invalid_worker);
  CHECK(pool.mark_alive("nobody").error().code() == core::errc::unknown_worker);
  CHECK(pool.mark_dead("nobody", "x").error().code() == core::errc::unknown_worker);
  CHECK(pool.deregister("nobody", "x").error().code() == core::errc::unknown_worker);
  CHECK(pool.size() == 0);
}

TEST_CASE("WorkerPool: an error names the worker and the rule it broke", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  auto no_address = make_worker("w1", 0);
  no_address.address.clear();
  CHECK(pool.register_worker(no_address).error().message() ==
        "a registration needs a non-empty id, an address and a capacity of at least 1 "
        "(got id 'w1', address '', capacity 0)");
  CHECK(pool.drain("nobody").error().message() == "worker 'nobody' is not registered");
  CHECK(pool.resume("nobody").error().code() == core::errc::unknown_worker);
  CHECK(pool.update_worker(make_worker("nobody")).error().message() == "worker 'nobody' is not registered");
  pool.stop();
  const auto stopped = pool.register_worker(make_worker("w2"));
  REQUIRE_FALSE(stopped);
  CHECK(stopped.error().code() == core::errc::pool_stopped);
  CHECK(stopped.error().message() == "the worker pool is stopped: worker 'w2' was not registered");
}

TEST_CASE("WorkerPool: capacity slots, and acquire waits without polling until a slot returns", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 3);

  std::vector<std::shared_ptr<Grant>> grants;
  for (int i = 0; i < 3; ++i) grants.push_back(acquire(pool));
  REQUIRE(run_until(io, [&] { return grants[2]->done; }));
  for (auto& g : grants) CHECK(g->worker() == "w1");
  CHECK(state_of(pool, "w1") == WorkerState::busy);
  CHECK(pool.find("w1")->in_use == 3);

  auto waiting = acquire(pool);
  run_ready(io);
  CHECK_FALSE(waiting->done);
  CHECK(pool.waiting() == 1);
  // Nothing is ready to run: the waiter costs nothing until a slot returns.
  CHECK(io.poll() == 0);

  grants[0]->lease.release();
  REQUIRE(run_until(io, [&] { return waiting->done; }));
  CHECK(waiting->worker() == "w1");
  CHECK(pool.find("w1")->in_use == 3);
}

TEST_CASE("WorkerPool: waiters are served first come, first served", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1");
  auto holder = acquire(pool);
  REQUIRE(run_until(io, [&] { return holder->done; }));

  std::vector<std::shared_ptr<Grant>> waiters;
  for (int i = 0; i < 5; ++i) waiters.push_back(acquire(pool));
  run_ready(io);

  auto* current = &holder->lease;
  for (int i = 0; i < 5; ++i) {
    current->release();
    REQUIRE(run_until(io, [&] { return waiters[i]->done; }));
    for (int j = i + 1; j < 5; ++j) CHECK_FALSE(waiters[j]->done);
    current = &waiters[i]->lease;
  }
}

TEST_CASE("WorkerPool: a waiter of higher priority is served first, FIFO among equals", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1");
  auto holder = acquire(pool);
  REQUIRE(run_until(io, [&] { return holder->done; }));

  // Arrival order: priorities 0, 5, 9, 5, 1; served: 9, the first 5, the second 5, 1, 0.
  const std::vector<std::uint8_t> priorities{0, 5, 9, 5, 1};
  std::vector<std::shared_ptr<Grant>> waiters;
  for (const auto p : priorities) waiters.push_back(acquire(pool, {}, p));
  run_ready(io);

  auto* current = &holder->lease;
  const std::vector<std::size_t> order{2, 1, 3, 4, 0};
  for (std::size_t served = 0; served < order.size(); ++served) {
    current->release();
    REQUIRE(run_until(io, [&] { return waiters[order[served]]->done; }));
    // The one slot went to that waiter alone.
    const auto done = std::count_if(waiters.begin(), waiters.end(), [](const auto& w) { return w->done; });
    CHECK(static_cast<std::size_t>(done) == served + 1);
    current = &waiters[order[served]]->lease;
  }
}

TEST_CASE("WorkerPool: a job requiring labels only lands on a matching worker", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "eu-1", 1, {{"region", "eu"}});
  add_alive(pool, "us-1", 1, {{"region", "us"}, {"arch", "arm64"}});

  auto us = acquire(pool, {{"region", "us"}});
  REQUIRE(run_until(io, [&] { return us->done; }));
  CHECK(us->worker() == "us-1");

  // A second us job waits even though eu-1 is free...
  auto us2 = acquire(pool, {{"region", "us"}, {"arch", "arm64"}});
  run_ready(io);
  CHECK_FALSE(us2->done);
  // ...and does not block an unlabelled job that eu-1 can take (FIFO among
  // the waiters a slot can serve, not across all waiters).
  auto any = acquire(pool);
  REQUIRE(run_until(io, [&] { return any->done; }));
  CHECK(any->worker() == "eu-1");

  // eu-1 coming free does not serve the us waiter.
  any->lease.release();
  run_ready(io);
  CHECK_FALSE(us2->done);
  us->lease.release();
  REQUIRE(run_until(io, [&] { return us2->done; }));
  CHECK(us2->worker() == "us-1");

  auto nowhere = acquire(pool, {{"region", "mars"}});
  run_ready(io);
  CHECK_FALSE(nowhere->done);
}

TEST_CASE("WorkerPool: unlabelled acquires spread round-robin over free workers", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  for (int i = 0; i < 3; ++i) add_alive(pool, "w" + std::to_string(i), 2);
  std::multiset<std::string> used;
  std::vector<std::shared_ptr<Grant>> grants;
  for (int i = 0; i < 6; ++i) grants.push_back(acquire(pool));
  REQUIRE(run_until(io, [&] { return grants.back()->done; }));
  for (auto& g : grants) used.insert(g->worker());
  for (int i = 0; i < 3; ++i) CHECK(used.count("w" + std::to_string(i)) == 2);
  // Order of the first three: all different workers before any is reused.
  std::set<std::string> first{grants[0]->worker(), grants[1]->worker(), grants[2]->worker()};
  CHECK(first.size() == 3);
}

TEST_CASE("WorkerPool: a lease returns its slot exactly once", "[worker_pool][seed]") {
  // Seed weakness: SetWorkerState("free") pushed a worker into the free
  // channel again on every call, so one worker could be handed out twice.
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 1);
  auto first = acquire(pool);
  REQUIRE(run_until(io, [&] { return first->done; }));

  WorkerPool::Lease moved = std::move(first->lease);
  CHECK_FALSE(first->lease);
  moved.release();
  moved.release();       // second release: nothing
  first->lease.release();  // moved-from: nothing
  REQUIRE(pool.mark_alive("w1"));  // "free" again: nothing
  REQUIRE(pool.register_worker(make_worker("w1")));  // same incarnation again: nothing

  auto a = acquire(pool);
  auto b = acquire(pool);
  run_ready(io);
  CHECK(a->done);
  CHECK_FALSE(b->done);  // one slot, handed out once
  CHECK(pool.find("w1")->in_use == 1);
}

TEST_CASE("WorkerPool: no free worker is ever dropped, however many there are", "[worker_pool][seed]") {
  // Seed weakness: the buffered FreeWorkers channel silently dropped workers
  // once it was full ("default: drop to avoid blocking").
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  constexpr int workers = 2000;
  for (int i = 0; i < workers; ++i) add_alive(pool, "w" + std::to_string(i));
  CHECK(pool.alive_capacity() == workers);

  for (int round = 0; round < 2; ++round) {
    std::vector<std::shared_ptr<Grant>> grants;
    for (int i = 0; i < workers; ++i) grants.push_back(acquire(pool));
    REQUIRE(run_until(io, [&] { return grants.back()->done; }));
    std::set<std::string> distinct;
    for (auto& g : grants) {
      REQUIRE(g->done);
      distinct.insert(g->worker());
    }
    CHECK(distinct.size() == workers);
    auto extra = acquire(pool);
    run_ready(io);
    CHECK_FALSE(extra->done);
    grants.clear();  // every lease returns
    REQUIRE(run_until(io, [&] { return extra->done; }));
  }
}

TEST_CASE("WorkerPool: a dead worker is never handed out, not even to a pending waiter", "[worker_pool][seed]") {
  // Seed weakness: dead workers stayed in the free channel.
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 1);
  auto holder = acquire(pool);
  REQUIRE(run_until(io, [&] { return holder->done; }));
  auto waiter = acquire(pool);
  run_ready(io);
  REQUIRE_FALSE(waiter->done);

  REQUIRE(pool.mark_dead("w1", "missed pings"));
  CHECK(state_of(pool, "w1") == WorkerState::dead);
  CHECK(pool.alive_capacity() == 0);
  CHECK_FALSE(holder->lease.current());

  holder->lease.release();  // the job on it ended: the slot must not come back
  run_ready(io);
  CHECK_FALSE(waiter->done);
  CHECK(state_of(pool, "w1") == WorkerState::dead);

  auto later = acquire(pool);
  run_ready(io);
  CHECK_FALSE(later->done);

  // It answers again: free with its full capacity, the oldest waiter first.
  REQUIRE(pool.mark_alive("w1"));
  REQUIRE(run_until(io, [&] { return waiter->done; }));
  CHECK(waiter->worker() == "w1");
  CHECK_FALSE(later->done);
  CHECK(pool.find("w1")->in_use == 1);
}

TEST_CASE("WorkerPool: a worker that died mid-job is not put back as free", "[worker_pool][seed]") {
  // Seed weakness: after RunJob failed because the worker died, the dispatcher
  // still called SetWorkerState(id, "free").
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 2);
  auto running = acquire(pool);
  REQUIRE(run_until(io, [&] { return running->done; }));
  const auto generation = running->lease.generation();

  std::vector<core::WorkerEvent> events;
  auto subscription = pool.subscribe([&](const core::WorkerEvent& e) { events.push_back(e); });
  REQUIRE(pool.mark_dead("w1", "missed 2 pings"));
  REQUIRE(events.size() == 1);
  CHECK(events[0].to == WorkerState::dead);
  CHECK(events[0].leases_lost);
  CHECK(events[0].lost_generation == generation);
  CHECK(events[0].reason == "missed 2 pings");

  running->lease.release();
  CHECK(state_of(pool, "w1") == WorkerState::dead);
  CHECK(pool.find("w1")->in_use == 0);
  auto next = acquire(pool);
  run_ready(io);
  CHECK_FALSE(next->done);
}

TEST_CASE("WorkerPool: a new incarnation voids the old leases, the same one keeps them", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 1);
  auto held = acquire(pool);
  REQUIRE(run_until(io, [&] { return held->done; }));

  // The same incarnation re-registering (it thought we forgot it) changes nothing.
  REQUIRE(pool.register_worker(make_worker("w1", 1)));
  CHECK(held->lease.current());
  CHECK(state_of(pool, "w1") == WorkerState::busy);

  // The process restarted: what ran on the old one is lost.
  auto restarted = make_worker("w1", 1);
  restarted.incarnation = "2";
  REQUIRE(pool.register_worker(restarted));
  CHECK_FALSE(held->lease.current());
  CHECK(state_of(pool, "w1") == WorkerState::registering);
  REQUIRE(pool.mark_alive("w1"));
  held->lease.release();  // stale: must not add a second slot
  auto a = acquire(pool);
  auto b = acquire(pool);
  run_ready(io);
  CHECK(a->done);
  CHECK_FALSE(b->done);

  // A ping reporting yet another incarnation voids leases too.
  REQUIRE(pool.mark_alive("w1", "3"));
  CHECK_FALSE(a->lease.current());
  CHECK(pool.find("w1")->info->incarnation == "3");
  REQUIRE(run_until(io, [&] { return b->done; }));
}

TEST_CASE("WorkerPool: draining takes no new jobs, running ones finish, resume undoes it", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 2);
  auto running = acquire(pool);
  REQUIRE(run_until(io, [&] { return running->done; }));

  REQUIRE(pool.drain("w1"));
  CHECK(state_of(pool, "w1") == WorkerState::draining);
  CHECK(pool.alive_capacity() == 0);
  CHECK(running->lease.current());
  auto next = acquire(pool);
  run_ready(io);
  CHECK_FALSE(next->done);
  running->lease.release();
  run_ready(io);
  CHECK_FALSE(next->done);
  CHECK(pool.find("w1")->in_use == 0);
  REQUIRE(pool.mark_alive("w1"));  // a ping does not undo a drain
  CHECK(state_of(pool, "w1") == WorkerState::draining);

  REQUIRE(pool.resume("w1"));
  REQUIRE(run_until(io, [&] { return next->done; }));
  CHECK(pool.alive_capacity() == 2);
}

TEST_CASE("WorkerPool: deregistration removes the worker, and a leaving one that dies voids its leases", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 1);
  auto held = acquire(pool);
  REQUIRE(run_until(io, [&] { return held->done; }));
  auto waiter = acquire(pool);
  run_ready(io);

  std::vector<core::WorkerEvent> events;
  auto subscription = pool.subscribe([&](const core::WorkerEvent& e) { events.push_back(e); });
  REQUIRE(pool.deregister("w1", "worker shutting down"));
  CHECK(pool.size() == 1);  // leaving: its job is still out
  REQUIRE(pool.mark_dead("w1", "missed 2 pings"));  // and then it died
  CHECK(pool.size() == 0);
  REQUIRE(events.size() == 2);
  CHECK(events[1].removed);
  CHECK(events[1].leases_lost);
  CHECK_FALSE(held->lease.current());
  held->lease.release();
  run_ready(io);
  CHECK_FALSE(waiter->done);  // never handed a removed worker

  add_alive(pool, "w2", 1);
  REQUIRE(run_until(io, [&] { return waiter->done; }));
  CHECK(waiter->worker() == "w2");
}

TEST_CASE("WorkerPool: update changes capacity and labels in place", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 1);
  auto a = acquire(pool);
  auto b = acquire(pool, {{"gpu", "yes"}});
  REQUIRE(run_until(io, [&] { return a->done; }));
  CHECK_FALSE(b->done);
  CHECK(pool.update_worker(make_worker("nobody")).error().code() == core::errc::unknown_worker);

  REQUIRE(pool.update_worker(make_worker("w1", 2, {{"gpu", "yes"}})));
  REQUIRE(run_until(io, [&] { return b->done; }));
  CHECK(b->worker() == "w1");
  CHECK(a->lease.current());
  CHECK(pool.alive_capacity() == 2);
}

TEST_CASE("WorkerPool: lifecycle events reach subscribers, slot churn does not", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  std::vector<core::WorkerEvent> events;
  auto subscription = pool.subscribe([&](const core::WorkerEvent& e) { events.push_back(e); });

  REQUIRE(pool.register_worker(make_worker("w1")));
  REQUIRE(pool.mark_alive("w1"));
  auto g = acquire(pool);
  REQUIRE(run_until(io, [&] { return g->done; }));
  g->lease.release();
  REQUIRE(pool.mark_dead("w1", "gone"));
  REQUIRE(pool.mark_alive("w1"));
  REQUIRE(pool.deregister("w1", "bye"));

  REQUIRE(events.size() == 5);
  CHECK(events[0].added);
  CHECK(events[0].to == WorkerState::registering);
  CHECK(events[1].from == WorkerState::registering);
  CHECK(events[1].to == WorkerState::free);
  CHECK(events[2].to == WorkerState::dead);
  CHECK_FALSE(events[2].leases_lost);  // nothing was running
  CHECK(events[3].from == WorkerState::dead);
  CHECK(events[3].to == WorkerState::free);
  CHECK(events[4].removed);

  subscription.reset();
  REQUIRE(pool.register_worker(make_worker("w2")));
  CHECK(events.size() == 5);
}

TEST_CASE("WorkerPool: a pending acquire can be cancelled", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  asio::cancellation_signal signal;
  bool done = false;
  std::error_code result;
  pool.async_acquire({}, asio::bind_cancellation_slot(signal.slot(), [&](std::error_code ec, WorkerPool::Lease) {
                       done = true;
                       result = ec;
                     }));
  run_ready(io);
  CHECK(pool.waiting() == 1);
  signal.emit(asio::cancellation_type::terminal);
  REQUIRE(run_until(io, [&] { return done; }));
  CHECK(result == asio::error::operation_aborted);
  CHECK(pool.waiting() == 0);

  // A worker arriving later is not handed to the cancelled waiter.
  add_alive(pool, "w1");
  auto g = acquire(pool);
  REQUIRE(run_until(io, [&] { return g->done; }));
  CHECK_FALSE(g->ec);
}

TEST_CASE("WorkerPool: stop fails pending and later acquires", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  auto pending = acquire(pool);
  run_ready(io);
  pool.stop();
  REQUIRE(run_until(io, [&] { return pending->done; }));
  CHECK(pending->ec == core::errc::pool_stopped);
  auto later = acquire(pool);
  REQUIRE(run_until(io, [&] { return later->done; }));
  CHECK(later->ec == core::errc::pool_stopped);
  CHECK(pool.register_worker(make_worker("w1")).error().code() == core::errc::pool_stopped);
}

TEST_CASE("WorkerPool: a completion is never invoked inside async_acquire", "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1");
  auto g = acquire(pool);
  CHECK_FALSE(g->done);  // even though a slot was free at once
  REQUIRE(run_until(io, [&] { return g->done; }));
}

TEST_CASE("WorkerPool: leases outliving the pool are harmless", "[worker_pool]") {
  asio::io_context io;
  std::shared_ptr<Grant> g;
  {
    WorkerPool pool(io.get_executor());
    add_alive(pool, "w1");
    g = acquire(pool);
    REQUIRE(run_until(io, [&] { return g->done; }));
  }
  CHECK(g->lease);
  g->lease.release();
  CHECK_FALSE(g->lease);
}

TEST_CASE("WorkerPoolSt: the single-threaded pool behaves the same", "[worker_pool]") {
  asio::io_context io;
  core::WorkerPoolSt pool(io.get_executor());
  REQUIRE(pool.register_worker(make_worker("w1", 1)));
  REQUIRE(pool.mark_alive("w1"));
  std::optional<core::WorkerPoolSt::Lease> lease;
  pool.async_acquire({}, [&](std::error_code, core::WorkerPoolSt::Lease l) { lease = std::move(l); });
  REQUIRE(run_until(io, [&] { return lease.has_value(); }));
  CHECK(lease->worker().id == "w1");
}

TEST_CASE("WorkerPool: a second live process with the same worker id is refused with a clear error",
          "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 1);
  auto held = held_slot(io, pool);

  auto other = make_worker("w1", 1);
  other.address = "10.0.0.9:50051";
  other.incarnation = "2";
  auto refused = pool.register_worker(other);
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code() == core::errc::duplicate_worker);
  CHECK_THAT(refused.error().message(), Catch::Contains("w1"));
  CHECK_THAT(refused.error().message(), Catch::Contains("10.0.0.9:50051"));
  CHECK_THAT(refused.error().message(), Catch::Contains("loopback:w1"));
  CHECK(held->lease.current());  // the first process keeps its job
  CHECK(pool.find("w1")->info->address == "loopback:w1");

  // A restart at the same address replaces it: only one process can answer there.
  auto restarted = make_worker("w1", 1);
  restarted.incarnation = "3";
  REQUIRE(pool.register_worker(restarted));
  CHECK_FALSE(held->lease.current());

  // Once the first stops answering pings, the second may take the id.
  REQUIRE(pool.mark_alive("w1"));
  REQUIRE(pool.mark_dead("w1", "missed 2 pings"));
  REQUIRE(pool.register_worker(other));
  CHECK(pool.find("w1")->info->address == "10.0.0.9:50051");
}

TEST_CASE("WorkerPool: a worker that deregisters with jobs in flight drains and leaves after the last one",
          "[worker_pool]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "w1", 2);
  auto first = held_slot(io, pool);
  auto second = held_slot(io, pool);
  std::vector<core::WorkerEvent> events;
  auto subscription = pool.subscribe([&](const core::WorkerEvent& e) { events.push_back(e); });

  REQUIRE(pool.deregister("w1", "graceful stop"));
  REQUIRE(pool.find("w1"));
  CHECK(state_of(pool, "w1") == WorkerState::draining);
  CHECK(pool.alive_capacity() == 0);
  CHECK(first->lease.current());  // its jobs are not lost
  for (const auto& e : events) CHECK_FALSE(e.leases_lost);
  auto waiter = acquire(pool);
  first->lease.release();
  run_ready(io);
  CHECK(pool.find("w1"));
  CHECK_FALSE(waiter->done);  // a leaving worker takes nothing new
  second->lease.release();
  CHECK_FALSE(pool.find("w1"));
  REQUIRE_FALSE(events.empty());
  CHECK(events.back().removed);
  CHECK_FALSE(events.back().leases_lost);
  CHECK(pool.size() == 0);

  // Without jobs in flight it leaves at once.
  add_alive(pool, "w2", 1);
  REQUIRE(run_until(io, [&] { return waiter->done; }));
  waiter->lease.release();
  REQUIRE(pool.deregister("w2", "graceful stop"));
  CHECK_FALSE(pool.find("w2"));
}

TEST_CASE("WorkerPool: a job a worker carries from before is claimed on that worker, once, full or not",
          "[worker_pool][carried]") {
  asio::io_context io;
  WorkerPool pool(io.get_executor());
  add_alive(pool, "other", 4);
  auto carrier = make_worker("carrier", 1);
  REQUIRE(pool.register_worker(carrier, {"running-1", "finished-1"}));

  CHECK_FALSE(pool.claim("running-1"));  // registering: not yet
  CHECK_FALSE(pool.claim("unknown"));
  REQUIRE(pool.mark_alive("carrier"));
  auto first = pool.claim("running-1");
  REQUIRE(first);
  CHECK(first.worker().id == "carrier");
  CHECK_FALSE(pool.claim("running-1"));  // handed out once
  // Its one slot is taken; the finished job's claim is granted all the same.
  auto second = pool.claim("finished-1");
  REQUIRE(second);
  CHECK(second.worker().id == "carrier");
  CHECK(pool.find("carrier")->in_use == 2);
  first.release();
  second.release();
  CHECK(pool.find("carrier")->in_use == 0);

  // Registering again replaces what it carries; leaving forgets it.
  REQUIRE(pool.register_worker(carrier, {"running-2"}));
  CHECK_FALSE(pool.claim("finished-1"));
  REQUIRE(pool.deregister("carrier", "gone"));
  CHECK_FALSE(pool.claim("running-2"));
  // A job id two workers carry belongs to the last that said so.
  REQUIRE(pool.register_worker(carrier, {"shared"}));
  REQUIRE(pool.mark_alive("carrier"));
  REQUIRE(pool.register_worker(make_worker("other", 4), {"shared"}));
  auto shared = pool.claim("shared");
  REQUIRE(shared);
  CHECK(shared.worker().id == "other");
}
