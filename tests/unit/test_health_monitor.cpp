// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0

#include <blacktree/core/health_monitor.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <asio/associated_executor.hpp>
#include <asio/bind_executor.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "../support/test_support.hpp"

namespace core = blacktree::core;
using namespace std::chrono_literals;
using blacktree::test::make_worker;
using blacktree::test::run_ready;
using blacktree::test::run_until;
using core::LoopbackTransport;
using core::WorkerPool;
using core::WorkerState;
using Mode = LoopbackTransport::Mode;

namespace {

// What a RecordingObserver saw. Shared: the monitor keeps its own copy of the observer.
class HealthLog {
 public:
  struct Failure {
    std::string id;
    std::error_code ec;
    std::uint32_t misses = 0;
    std::optional<WorkerState> state;  // the pool's view when the failure was reported
  };

  void ok(const std::string& id) {
    std::lock_guard lock(mutex_);
    ++ok_[id];
    events_.push_back(id + ":ok");
  }
  void failed(Failure failure) {
    std::lock_guard lock(mutex_);
    ++failed_[failure.id];
    events_.push_back(failure.id + ":fail" + std::to_string(failure.misses));
    failures_.push_back(std::move(failure));
  }
  void dead(const std::string& id, std::string reason) {
    std::lock_guard lock(mutex_);
    ++dead_[id];
    events_.push_back(id + ":dead");
    dead_reasons_.push_back(std::move(reason));
  }
  void alive(const std::string& id) {
    std::lock_guard lock(mutex_);
    ++alive_[id];
    events_.push_back(id + ":alive");
  }
  void forgotten(const std::string& id, std::string reason) {
    std::lock_guard lock(mutex_);
    ++forgotten_[id];
    events_.push_back(id + ":forgotten");
    forgotten_reasons_.push_back(std::move(reason));
  }
  void enter() {
    if (inside_.fetch_add(1, std::memory_order_acq_rel) != 0) overlapped_.store(true);
  }
  void leave() { inside_.fetch_sub(1, std::memory_order_acq_rel); }
  // What a hook found wrong. Hooks may run on any io_context thread, where a
  // Catch2 assertion is not safe; the test's own thread checks this list.
  void wrong(std::string what) {
    std::lock_guard lock(mutex_);
    wrong_.push_back(std::move(what));
  }
  std::vector<std::string> wrongs() const {
    std::lock_guard lock(mutex_);
    return wrong_;
  }

  int oks(const std::string& id) const { return count(ok_, id); }
  int fails(const std::string& id) const { return count(failed_, id); }
  int pings(const std::string& id) const { return oks(id) + fails(id); }
  int deaths(const std::string& id) const { return count(dead_, id); }
  int revivals(const std::string& id) const { return count(alive_, id); }
  int forgettings(const std::string& id) const { return count(forgotten_, id); }
  std::vector<std::string> forgotten_reasons() const {
    std::lock_guard lock(mutex_);
    return forgotten_reasons_;
  }
  bool overlapped() const { return overlapped_.load(); }
  std::vector<Failure> failures() const {
    std::lock_guard lock(mutex_);
    return failures_;
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::vector<std::string> dead_reasons() const {
    std::lock_guard lock(mutex_);
    return dead_reasons_;
  }

 private:
  int count(const std::map<std::string, int>& m, const std::string& id) const {
    std::lock_guard lock(mutex_);
    auto it = m.find(id);
    return it == m.end() ? 0 : it->second;
  }

  mutable std::mutex mutex_;
  std::map<std::string, int> ok_, failed_, dead_, alive_, forgotten_;
  std::vector<Failure> failures_;
  std::vector<std::string> events_;
  std::vector<std::string> dead_reasons_;
  std::vector<std::string> forgotten_reasons_;
  std::vector<std::string> wrong_;
  std::atomic<int> inside_{0};
  std::atomic<bool> overlapped_{false};
};

// Records every hook; also notes the pool's state of the worker at each failed ping.
struct RecordingObserver : core::HealthObserver {
  std::shared_ptr<HealthLog> log;
  const WorkerPool* pool = nullptr;

  struct Scope {
    explicit Scope(HealthLog& l) : log(l) { log.enter(); }
    ~Scope() { log.leave(); }
    HealthLog& log;
  };

  void on_ping_ok(const core::WorkerInfo& w, std::chrono::steady_clock::duration round_trip) {
    Scope scope(*log);
    if (round_trip < std::chrono::steady_clock::duration::zero()) log->wrong(w.id + ": negative round trip");
    log->ok(w.id);
  }
  void on_ping_failed(const core::WorkerInfo& w, std::error_code ec, std::uint32_t misses) {
    Scope scope(*log);
    std::optional<WorkerState> state;
    if (pool)
      if (auto s = pool->find(w.id)) state = s->state;
    log->failed({w.id, ec, misses, state});
  }
  void on_dead(const core::WorkerInfo& w, std::string_view reason) {
    Scope scope(*log);
    log->dead(w.id, std::string(reason));
  }
  void on_alive(const core::WorkerInfo& w) {
    Scope scope(*log);
    log->alive(w.id);
  }
  void on_forgotten(const core::WorkerInfo& w, std::string_view reason) {
    Scope scope(*log);
    // Deregistered before the hook runs, so its owner may drop what it keeps.
    if (pool && pool->find(w.id)) log->wrong(w.id + ": still registered when forgotten");
    log->forgotten(w.id, std::string(reason));
  }
};

// Forwards to a LoopbackTransport and counts the pings actually sent, which
// an observer cannot see once the monitor ignores replies (stop, deregister),
// and the replies handed back to the monitor (counted on the monitor's
// executor, just before its own handler runs).
class CountingTransport {
 public:
  explicit CountingTransport(LoopbackTransport& inner) : inner_(inner) {}

  template <class Token>
  auto async_run(const core::WorkerInfo& w, const core::Job& j, core::ProgressCallback p, Token&& token) {
    return inner_.async_run(w, j, std::move(p), std::forward<Token>(token));
  }

  template <class Handler>
  void async_ping(const core::WorkerInfo& w, std::chrono::milliseconds deadline, Handler&& handler) {
    counts_->add(counts_->sent, w.id);
    auto executor = asio::get_associated_executor(handler, asio::system_executor{});
    inner_.async_ping(w, deadline,
                      asio::bind_executor(executor, [counts = counts_, id = w.id, h = std::forward<Handler>(handler)](
                                                        std::error_code ec, core::PingReply reply) mutable {
                        counts->add(counts->answered, id);
                        std::move(h)(ec, std::move(reply));
                      }));
  }

  int sent(const std::string& id) const { return counts_->get(counts_->sent, id); }
  int answered(const std::string& id) const { return counts_->get(counts_->answered, id); }

 private:
  // Shared with the pings in flight, which may outlive the transport.
  struct Counts {
    mutable std::mutex mutex;
    std::map<std::string, int> sent, answered;
    void add(std::map<std::string, int>& m, const std::string& id) {
      std::lock_guard lock(mutex);
      ++m[id];
    }
    int get(const std::map<std::string, int>& m, const std::string& id) const {
      std::lock_guard lock(mutex);
      auto it = m.find(id);
      return it == m.end() ? 0 : it->second;
    }
  };

  LoopbackTransport& inner_;
  std::shared_ptr<Counts> counts_ = std::make_shared<Counts>();
};
static_assert(core::WorkerTransport<CountingTransport>);

using Monitor = core::HealthMonitor<LoopbackTransport, WorkerPool, RecordingObserver>;
using CountingMonitor = core::HealthMonitor<CountingTransport, WorkerPool, RecordingObserver>;

core::HealthOptions fast(std::uint32_t misses_before_dead = 2) {
  core::HealthOptions options;
  options.interval = 20ms;
  options.timeout = 10ms;
  options.misses_before_dead = misses_before_dead;
  return options;
}

struct Rig {
  asio::io_context io;
  LoopbackTransport transport{io.get_executor()};
  WorkerPool pool{io.get_executor()};
  std::shared_ptr<HealthLog> log = std::make_shared<HealthLog>();

  ~Rig() {
    if (std::uncaught_exceptions() == 0) CHECK(log->wrongs().empty());
  }

  RecordingObserver observer() {
    RecordingObserver o;
    o.log = log;
    o.pool = &pool;
    return o;
  }

  core::WorkerInfo add(const std::string& id, std::uint32_t capacity = 1) {
    auto info = make_worker(id, capacity);
    transport.add_endpoint(info.address, capacity);
    REQUIRE(pool.register_worker(info));
    return info;
  }

  std::optional<WorkerState> state(const std::string& id) const {
    auto s = pool.find(id);
    return s ? std::optional<WorkerState>(s->state) : std::nullopt;
  }

  bool wait_state(const std::string& id, WorkerState want, std::chrono::milliseconds timeout = 3s) {
    return run_until(io, [&] { return state(id) == want; }, timeout);
  }
};

struct Grant {
  bool done = false;
  std::error_code ec;
  WorkerPool::Lease lease;
};

std::shared_ptr<Grant> acquire(WorkerPool& pool) {
  auto grant = std::make_shared<Grant>();
  pool.async_acquire({}, [grant](std::error_code ec, WorkerPool::Lease lease) {
    grant->done = true;
    grant->ec = ec;
    grant->lease = std::move(lease);
  });
  return grant;
}

}  // namespace

TEST_CASE("HealthMonitor: a newly registered worker is pinged at once and becomes free", "[health_monitor]") {
  Rig rig;
  core::HealthOptions options;
  options.interval = 10s;  // only the immediate probe can make it free within the test
  options.timeout = 1s;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, options, rig.observer());

  SECTION("registered after start") {
    monitor.start();
    run_ready(rig.io);  // the first tick: nothing to ping yet; the next one is 10 s away
    REQUIRE(rig.log->pings("w1") == 0);

    rig.add("w1");
    REQUIRE(rig.state("w1") == WorkerState::registering);
  }
  SECTION("registered before start") {
    rig.add("w1");
    REQUIRE(rig.state("w1") == WorkerState::registering);
    monitor.start();
  }

  const auto started = std::chrono::steady_clock::now();
  REQUIRE(rig.wait_state("w1", WorkerState::free, 2s));
  CHECK(std::chrono::steady_clock::now() - started < 2s);
  CHECK(rig.log->oks("w1") == 1);
  CHECK(rig.log->revivals("w1") == 1);  // registering -> free reports on_alive
  CHECK(rig.pool.alive_capacity() == 1);
  // The pool learned the worker's real incarnation from the reply.
  CHECK(rig.pool.find("w1")->info->incarnation == rig.transport.incarnation("loopback:w1"));
}

TEST_CASE("HealthMonitor: a worker that misses N pings in a row is marked dead and not before", "[health_monitor]") {
  const Mode mode = GENERATE(Mode::silent, Mode::unreachable);
  const std::error_code expected =
      mode == Mode::silent ? core::errc::ping_timeout : core::errc::worker_unreachable;
  CAPTURE(mode == Mode::silent ? "silent" : "unreachable");

  Rig rig;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, fast(3), rig.observer());
  auto w1 = rig.add("w1");
  rig.add("w2");  // stays up: its pings must not count against w1
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));
  REQUIRE(rig.wait_state("w2", WorkerState::free));

  rig.transport.set_mode(w1.address, mode);
  REQUIRE(run_until(rig.io, [&] { return rig.log->fails("w1") >= 2; }));
  // Two misses: still alive and still handed out.
  REQUIRE(rig.state("w1") == WorkerState::free);
  REQUIRE(rig.log->deaths("w1") == 0);

  REQUIRE(run_until(rig.io, [&] { return rig.log->deaths("w1") == 1; }));
  CHECK(rig.state("w1") == WorkerState::dead);
  CHECK(rig.state("w2") == WorkerState::free);
  CHECK(rig.log->deaths("w2") == 0);
  CHECK(rig.pool.alive_capacity() == 1);

  std::vector<HealthLog::Failure> w1_failures;
  for (auto& f : rig.log->failures())
    if (f.id == "w1") w1_failures.push_back(f);
  REQUIRE(w1_failures.size() >= 3);
  for (std::size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(w1_failures[i].misses == i + 1);
    CHECK(w1_failures[i].ec == expected);
    CHECK(w1_failures[i].state == WorkerState::free);  // reported before the worker is marked dead
  }

  // on_dead comes right after the third consecutive miss, and only then.
  std::vector<std::string> w1_events;
  for (auto& e : rig.log->events())
    if (e.rfind("w1:", 0) == 0) w1_events.push_back(e);
  auto dead_at = std::find(w1_events.begin(), w1_events.end(), "w1:dead");
  REQUIRE(dead_at - w1_events.begin() >= 3);
  CHECK(std::vector<std::string>(dead_at - 3, dead_at) ==
        std::vector<std::string>{"w1:fail1", "w1:fail2", "w1:fail3"});
  REQUIRE(rig.log->dead_reasons().size() == 1);
  CHECK_THAT(rig.log->dead_reasons().front(), Catch::Contains("missed 3 pings"));

  // Dead stays dead (and is reported dead once) while it keeps missing.
  const int fails_at_death = rig.log->fails("w1");
  REQUIRE(run_until(rig.io, [&] { return rig.log->fails("w1") >= fails_at_death + 2; }));
  CHECK(rig.state("w1") == WorkerState::dead);
  CHECK(rig.log->deaths("w1") == 1);
}

TEST_CASE("HealthMonitor: a miss streak is reset by one answer", "[health_monitor]") {
  Rig rig;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, fast(3), rig.observer());
  auto w1 = rig.add("w1");
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));

  for (int round = 0; round < 3; ++round) {
    const int fails = rig.log->fails("w1");
    rig.transport.set_mode(w1.address, Mode::unreachable);
    REQUIRE(run_until(rig.io, [&] { return rig.log->fails("w1") >= fails + 2; }));
    rig.transport.set_mode(w1.address, Mode::up);
    const int oks = rig.log->oks("w1");
    REQUIRE(run_until(rig.io, [&] { return rig.log->oks("w1") > oks; }));
  }
  // Six misses in all, never three in a row.
  CHECK(rig.log->fails("w1") >= 6);
  CHECK(rig.log->deaths("w1") == 0);
  CHECK(rig.state("w1") == WorkerState::free);
  for (auto& f : rig.log->failures()) CHECK(f.misses <= 2);
}

TEST_CASE("HealthMonitor: a dead worker that answers again becomes free and is used again", "[health_monitor]") {
  Rig rig;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, fast(2), rig.observer());
  auto w1 = rig.add("w1");
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));
  REQUIRE(rig.log->revivals("w1") == 1);

  rig.transport.set_mode(w1.address, Mode::silent);
  REQUIRE(rig.wait_state("w1", WorkerState::dead));

  // Someone waits for a worker: the dead one is not handed out while it stays silent.
  auto grant = acquire(rig.pool);
  const int fails = rig.log->fails("w1");
  REQUIRE(run_until(rig.io, [&] { return rig.log->fails("w1") >= fails + 2; }));
  REQUIRE_FALSE(grant->done);
  REQUIRE(rig.pool.waiting() == 1);

  rig.transport.set_mode(w1.address, Mode::up);
  REQUIRE(run_until(rig.io, [&] { return grant->done; }));
  CHECK_FALSE(grant->ec);
  REQUIRE(grant->lease);
  CHECK(grant->lease.worker().id == "w1");
  CHECK(grant->lease.current());
  CHECK(rig.state("w1") == WorkerState::busy);
  CHECK(rig.log->revivals("w1") == 2);  // registering -> free, then dead -> free
  CHECK(rig.log->deaths("w1") == 1);

  // Released, it is free again and can be acquired once more.
  grant->lease.release();
  CHECK(rig.state("w1") == WorkerState::free);
  auto again = acquire(rig.pool);
  REQUIRE(run_until(rig.io, [&] { return again->done; }));
  CHECK(again->lease.worker().id == "w1");
}

TEST_CASE("HealthMonitor: a worker that restarted has its old leases voided and stays usable", "[health_monitor]") {
  Rig rig;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, fast(2), rig.observer());
  auto w1 = rig.add("w1");
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));

  std::vector<core::WorkerEvent> events;
  auto subscription = rig.pool.subscribe([&](const core::WorkerEvent& e) { events.push_back(e); });

  auto old = acquire(rig.pool);
  REQUIRE(run_until(rig.io, [&] { return old->done; }));
  REQUIRE(old->lease.current());
  REQUIRE(rig.state("w1") == WorkerState::busy);
  const auto old_incarnation = rig.transport.incarnation(w1.address);

  rig.transport.restart(w1.address);
  REQUIRE(rig.transport.incarnation(w1.address) != old_incarnation);
  REQUIRE(run_until(rig.io, [&] { return !old->lease.current(); }));

  auto lost = std::find_if(events.begin(), events.end(), [](const core::WorkerEvent& e) { return e.leases_lost; });
  REQUIRE(lost != events.end());
  CHECK(lost->info->id == "w1");
  CHECK(lost->lost_generation == old->lease.generation());
  CHECK(lost->info->incarnation == rig.transport.incarnation(w1.address));
  CHECK(rig.log->deaths("w1") == 0);  // a restart is not a death

  // The slot the old lease held was reclaimed: the worker is free and usable.
  REQUIRE(rig.state("w1") == WorkerState::free);
  auto fresh = acquire(rig.pool);
  REQUIRE(run_until(rig.io, [&] { return fresh->done; }));
  REQUIRE(fresh->lease);
  CHECK(fresh->lease.current());

  // Returning the void lease must not hand the worker's only slot out twice.
  old->lease.release();
  CHECK(rig.state("w1") == WorkerState::busy);
  CHECK(rig.pool.find("w1")->in_use == 1);
  auto third = acquire(rig.pool);
  run_ready(rig.io);
  CHECK_FALSE(third->done);
  fresh->lease.release();
  REQUIRE(run_until(rig.io, [&] { return third->done; }));
  CHECK(third->lease.worker().id == "w1");
}

TEST_CASE("HealthMonitor: a deregistered worker is no longer pinged", "[health_monitor]") {
  Rig rig;
  CountingTransport counting(rig.transport);
  CountingMonitor monitor(rig.io.get_executor(), counting, rig.pool, fast(2), rig.observer());
  rig.add("w1");
  rig.add("w2");
  monitor.start();
  REQUIRE(run_until(rig.io, [&] { return rig.log->oks("w1") >= 2 && rig.log->oks("w2") >= 2; }));

  REQUIRE(rig.pool.deregister("w1", "scaled in"));
  const int sent_w1 = counting.sent("w1");
  const int seen_w1 = rig.log->pings("w1");
  const int sent_w2 = counting.sent("w2");

  // Five more rounds for w2; none for w1.
  REQUIRE(run_until(rig.io, [&] { return counting.sent("w2") >= sent_w2 + 5; }));
  CHECK(counting.sent("w1") == sent_w1);
  CHECK(rig.log->pings("w1") == seen_w1);
  CHECK(rig.log->deaths("w1") == 0);
  CHECK_FALSE(rig.pool.find("w1"));

  // Registering again is a fresh start: pinged at once, free again.
  REQUIRE(rig.pool.register_worker(make_worker("w1")));
  REQUIRE(rig.wait_state("w1", WorkerState::free));
  CHECK(counting.sent("w1") > sent_w1);
}

// A ping sent to the worker's previous registration may answer after the
// worker deregistered and registered again; that answer says nothing about
// the new registration and must not count against it.
TEST_CASE("HealthMonitor: a stale ping reply does not count against a re-registered worker",
          "[health_monitor]") {
  Rig rig;
  CountingTransport counting(rig.transport);
  core::HealthOptions options;
  options.interval = 10s;  // only the probes on registration ping
  options.timeout = 100ms;
  options.misses_before_dead = 1;
  CountingMonitor monitor(rig.io.get_executor(), counting, rig.pool, options, rig.observer());
  auto w1 = rig.add("w1");
  rig.transport.set_mode(w1.address, Mode::silent);
  monitor.start();
  REQUIRE(run_until(rig.io, [&] { return counting.sent("w1") == 1; }, 2s));  // pending for 100 ms

  REQUIRE(rig.pool.deregister("w1", "scaled in"));
  rig.transport.set_mode(w1.address, Mode::up);
  REQUIRE(rig.pool.register_worker(w1));
  REQUIRE(rig.wait_state("w1", WorkerState::free, 2s));  // the new registration's own probe answered

  // Now the first registration's ping times out.
  REQUIRE(run_until(rig.io, [&] { return counting.answered("w1") == 2; }, 2s));
  CHECK(rig.log->fails("w1") == 0);
  CHECK(rig.log->deaths("w1") == 0);
  CHECK(rig.state("w1") == WorkerState::free);
}

// start() is idempotent while running; after stop() it should behave like the
// first start, including pinging newly registered workers at once.
TEST_CASE("HealthMonitor: started again after stop it pings new workers at once",
          "[health_monitor]") {
  Rig rig;
  core::HealthOptions options;
  options.interval = 10s;
  options.timeout = 1s;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, options, rig.observer());
  monitor.start();
  rig.add("w1");
  REQUIRE(rig.wait_state("w1", WorkerState::free, 2s));

  monitor.stop();
  run_ready(rig.io);
  monitor.start();
  run_ready(rig.io);
  rig.add("w2");
  REQUIRE(rig.wait_state("w2", WorkerState::free, 1s));
}

TEST_CASE("HealthMonitor: the default observer compiles away and the monitor still works", "[health_monitor]") {
  STATIC_REQUIRE(std::is_empty_v<core::HealthObserver>);

  Rig rig;
  core::HealthMonitor<LoopbackTransport> monitor(rig.io.get_executor(), rig.transport, rig.pool, fast(2));
  auto w1 = rig.add("w1");
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));
  rig.transport.set_mode(w1.address, Mode::unreachable);
  REQUIRE(rig.wait_state("w1", WorkerState::dead));
  rig.transport.set_mode(w1.address, Mode::up);
  REQUIRE(rig.wait_state("w1", WorkerState::free));
}

TEST_CASE("HealthMonitor: works with the single-threaded pool", "[health_monitor]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  core::WorkerPoolSt pool(io.get_executor());
  core::HealthMonitor<LoopbackTransport, core::WorkerPoolSt> monitor(io.get_executor(), transport, pool, fast(2));
  auto w1 = make_worker("w1");
  transport.add_endpoint(w1.address, 1);
  REQUIRE(pool.register_worker(w1));
  monitor.start();
  REQUIRE(run_until(io, [&] { return pool.find("w1")->state == WorkerState::free; }, 3s));
  transport.set_mode(w1.address, Mode::silent);
  REQUIRE(run_until(io, [&] { return pool.find("w1")->state == WorkerState::dead; }, 3s));
}

TEST_CASE("HealthMonitor: stop ends pinging and ignores answers still on their way", "[health_monitor]") {
  // Two monitors on one io_context: the one left running is the clock that
  // shows the stopped one had time to ping, and did not.
  Rig rig;
  CountingTransport counting(rig.transport);
  WorkerPool other_pool(rig.io.get_executor());
  auto other_log = std::make_shared<HealthLog>();
  RecordingObserver other_observer;
  other_observer.log = other_log;

  CountingMonitor monitor(rig.io.get_executor(), counting, rig.pool, fast(2), rig.observer());
  CountingMonitor control(rig.io.get_executor(), counting, other_pool, fast(2), other_observer);
  auto a = rig.add("a");
  auto b = make_worker("b");
  rig.transport.add_endpoint(b.address, 1);
  REQUIRE(other_pool.register_worker(b));
  monitor.start();
  control.start();
  REQUIRE(run_until(rig.io, [&] { return rig.log->oks("a") >= 2 && other_log->oks("b") >= 2; }));

  monitor.stop();
  // The stop runs on the monitor's strand; after it, nothing more may be sent.
  bool stopped = false;
  int sent_at_stop = -1;
  asio::post(monitor.get_executor(), [&] {
    stopped = true;
    sent_at_stop = counting.sent("a");
  });
  REQUIRE(run_until(rig.io, [&] { return stopped; }));
  const int seen_at_stop = rig.log->pings("a");

  // A stopped monitor does not declare a silent worker dead either.
  rig.transport.set_mode(a.address, Mode::silent);
  const int sent_b = counting.sent("b");
  REQUIRE(run_until(rig.io, [&] { return counting.sent("b") >= sent_b + 6; }));
  CHECK(counting.sent("a") == sent_at_stop);
  CHECK(rig.log->pings("a") == seen_at_stop);
  CHECK(rig.state("a") == WorkerState::free);
  CHECK(rig.log->deaths("a") == 0);

  // A worker registered after stop is not pinged either.
  rig.add("late");
  REQUIRE(run_until(rig.io, [&] { return counting.sent("b") >= sent_b + 9; }));
  CHECK(counting.sent("late") == 0);
  CHECK(rig.state("late") == WorkerState::registering);
}

TEST_CASE("HealthMonitor: stop cancels the pings in flight, so the io_context runs out of work",
          "[health_monitor]") {
  // A service joins its io threads after stopping the monitor: a ping to a
  // silent worker must not keep io_context::run() going until its deadline.
  Rig rig;
  core::HealthOptions options;
  options.interval = 600s;
  options.timeout = 600s;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, options, rig.observer());
  auto w = rig.add("w1");
  rig.transport.set_mode(w.address, Mode::silent);
  monitor.start();
  run_ready(rig.io);  // the first round: w1 is pinged, and its ping waits
  monitor.stop();
  run_ready(rig.io);
  CHECK(rig.io.stopped());  // out of work: nothing of the monitor is pending
  // The cancelled ping counts for nothing: no miss, no answer.
  CHECK(rig.log->failures().empty());
  CHECK(rig.log->pings("w1") == 0);
  CHECK(rig.state("w1") == WorkerState::registering);

  // Started again, it pings again: an answer makes the worker free.
  rig.transport.set_mode(w.address, Mode::up);
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));
}

TEST_CASE("HealthMonitor: destroying the monitor while a ping is pending is safe", "[health_monitor]") {
  asio::io_context io;
  auto log = std::make_shared<HealthLog>();
  core::HealthOptions options;
  options.interval = 10s;
  options.timeout = 30ms;  // the silent endpoint answers the ping with a timeout after this
  const bool destroy_everything = GENERATE(false, true);
  CAPTURE(destroy_everything);

  auto transport = std::make_unique<LoopbackTransport>(io.get_executor());
  auto pool = std::make_unique<WorkerPool>(io.get_executor());
  auto counting = std::make_unique<CountingTransport>(*transport);
  RecordingObserver observer;
  observer.log = log;
  auto monitor = std::make_unique<CountingMonitor>(io.get_executor(), *counting, *pool, options, observer);

  auto w1 = make_worker("w1");
  transport->add_endpoint(w1.address, 1);
  transport->set_mode(w1.address, Mode::silent);
  monitor->start();
  REQUIRE(pool->register_worker(w1));
  REQUIRE(run_until(io, [&] { return counting->sent("w1") == 1; }, 2s));

  monitor.reset();  // the ping's timeout is still pending
  if (destroy_everything) {
    counting.reset();
    pool.reset();
    transport.reset();
  }
  // Flush: the pending ping times out into a monitor that no longer exists.
  if (io.stopped()) io.restart();
  io.run_for(2s);
  CHECK(io.stopped());  // ran out of work: nothing left pending, nothing rescheduled
  CHECK(log->pings("w1") == 0);
  CHECK(log->deaths("w1") == 0);
  if (!destroy_everything) {
    CHECK(counting->sent("w1") == 1);
    CHECK(pool->find("w1")->state == WorkerState::registering);
  }
}

TEST_CASE("HealthMonitor: many workers on a multi-threaded io_context converge", "[health_monitor][threads]") {
  asio::io_context io;
  LoopbackTransport transport(io.get_executor());
  WorkerPool pool(io.get_executor());
  auto log = std::make_shared<HealthLog>();
  RecordingObserver observer;
  observer.log = log;
  observer.pool = &pool;
  Monitor monitor(io.get_executor(), transport, pool, fast(2), observer);

  // Joined on every exit path, including a failed REQUIRE.
  struct Threads {
    asio::io_context& io;
    asio::executor_work_guard<asio::io_context::executor_type> guard;
    std::vector<std::thread> threads;
    explicit Threads(asio::io_context& ctx) : io(ctx), guard(ctx.get_executor()) {
      for (int i = 0; i < 3; ++i) threads.emplace_back([this] { io.run(); });
    }
    ~Threads() {
      guard.reset();
      io.stop();
      for (auto& t : threads) t.join();
    }
  } threads(io);

  constexpr int n = 12;
  auto id = [](int i) { return "w" + std::to_string(i); };
  auto flaky = [](int i) { return i % 2 == 1; };
  for (int i = 0; i < n; ++i) {
    auto info = make_worker(id(i), 2);
    transport.add_endpoint(info.address, 2);
    if (flaky(i)) transport.set_mode(info.address, i % 4 == 1 ? Mode::silent : Mode::unreachable);
  }
  monitor.start();
  for (int i = 0; i < n; ++i) REQUIRE(pool.register_worker(make_worker(id(i), 2)));

  auto count = [&](WorkerState want) {
    int c = 0;
    for (const auto& s : pool.snapshot()) c += s.state == want;
    return c;
  };
  REQUIRE(run_until(io, [&] { return count(WorkerState::free) == n / 2 && count(WorkerState::dead) == n / 2; }, 4s));
  CHECK(pool.alive_capacity() == n);  // 6 live workers, 2 slots each

  for (int i = 0; i < n; ++i)
    if (flaky(i)) transport.set_mode("loopback:" + id(i), Mode::up);
  REQUIRE(run_until(io, [&] { return count(WorkerState::free) == n; }, 4s));
  CHECK(pool.alive_capacity() == 2 * n);

  monitor.stop();
  for (int i = 0; i < n; ++i) {
    CAPTURE(i);
    CHECK(log->revivals(id(i)) == 1);  // up: registering -> free; flaky: registering -> dead -> free
    CHECK(log->deaths(id(i)) == (flaky(i) ? 1 : 0));
  }
  CHECK_FALSE(log->overlapped());  // hooks run on the monitor's strand, one at a time
  CHECK(log->wrongs().empty());
}

TEST_CASE("HealthMonitor: a worker dead longer than forget_dead_after is deregistered and reported",
          "[health_monitor]") {
  Rig rig;
  auto options = fast(2);
  options.forget_dead_after = 100ms;
  CountingTransport counting(rig.transport);
  CountingMonitor monitor(rig.io.get_executor(), counting, rig.pool, options, rig.observer());
  auto w1 = rig.add("w1");
  rig.add("w2");
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));
  REQUIRE(rig.wait_state("w2", WorkerState::free));

  rig.transport.set_mode(w1.address, Mode::unreachable);
  REQUIRE(rig.wait_state("w1", WorkerState::dead));
  const auto dead_at = std::chrono::steady_clock::now();
  // Still listed (and still pinged) while dead for less than the limit.
  CHECK(rig.log->forgettings("w1") == 0);

  REQUIRE(run_until(rig.io, [&] { return rig.log->forgettings("w1") == 1; }));
  CHECK(std::chrono::steady_clock::now() - dead_at >= 50ms);  // not at the first dead tick
  CHECK_FALSE(rig.pool.find("w1"));
  REQUIRE(rig.log->forgotten_reasons().size() == 1);
  CHECK(rig.log->forgotten_reasons().front() == "dead for more than 100 ms");

  // Forgotten once, pinged no more; the live worker is untouched.
  const int sent_w1 = counting.sent("w1");
  const int sent_w2 = counting.sent("w2");
  REQUIRE(run_until(rig.io, [&] { return counting.sent("w2") >= sent_w2 + 5; }));
  CHECK(counting.sent("w1") == sent_w1);
  CHECK(rig.log->forgettings("w1") == 1);
  CHECK(rig.log->forgettings("w2") == 0);
  CHECK(rig.state("w2") == WorkerState::free);

  // One that comes back registers again and is used again.
  rig.transport.set_mode(w1.address, Mode::up);
  REQUIRE(rig.pool.register_worker(w1));
  REQUIRE(rig.wait_state("w1", WorkerState::free));
}

TEST_CASE("HealthMonitor: whole seconds of forget_dead_after read as seconds", "[health_monitor]") {
  Rig rig;
  auto options = fast(1);
  options.forget_dead_after = 1s;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, options, rig.observer());
  auto w1 = rig.add("w1");
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));
  rig.transport.set_mode(w1.address, Mode::unreachable);
  REQUIRE(run_until(rig.io, [&] { return rig.log->forgettings("w1") == 1; }, 5s));
  CHECK(rig.log->forgotten_reasons() == std::vector<std::string>{"dead for more than 1 s"});
}

TEST_CASE("HealthMonitor: without forget_dead_after a dead worker stays listed", "[health_monitor]") {
  Rig rig;
  Monitor monitor(rig.io.get_executor(), rig.transport, rig.pool, fast(1), rig.observer());
  auto w1 = rig.add("w1");
  monitor.start();
  REQUIRE(rig.wait_state("w1", WorkerState::free));
  rig.transport.set_mode(w1.address, Mode::unreachable);
  REQUIRE(rig.wait_state("w1", WorkerState::dead));
  const int fails = rig.log->fails("w1");
  REQUIRE(run_until(rig.io, [&] { return rig.log->fails("w1") >= fails + 10; }));  // 10 intervals dead
  CHECK(rig.state("w1") == WorkerState::dead);
  CHECK(rig.log->forgettings("w1") == 0);
}

namespace {
// Notes when each ping is sent, for the spreading test.
class TimingTransport {
 public:
  explicit TimingTransport(LoopbackTransport& inner) : inner_(inner) {}
  template <class Token>
  auto async_run(const core::WorkerInfo& w, const core::Job& j, core::ProgressCallback p, Token&& token) {
    return inner_.async_run(w, j, std::move(p), std::forward<Token>(token));
  }
  template <class Handler>
  void async_ping(const core::WorkerInfo& w, std::chrono::milliseconds deadline, Handler&& handler) {
    sent.emplace_back(std::chrono::steady_clock::now(), w.id);  // on the monitor's strand: one thread
    inner_.async_ping(w, deadline, std::forward<Handler>(handler));
  }
  std::vector<std::pair<std::chrono::steady_clock::time_point, std::string>> sent;

 private:
  LoopbackTransport& inner_;
};
static_assert(core::WorkerTransport<TimingTransport>);
}  // namespace

TEST_CASE("HealthMonitor: the pings of a round are spread over the interval, each worker once",
          "[health_monitor]") {
  Rig rig;
  TimingTransport timing(rig.transport);
  for (int i = 0; i < 20; ++i) rig.add("w" + std::to_string(i));
  core::HealthOptions options;
  options.interval = 400ms;
  options.timeout = 200ms;
  core::HealthMonitor<TimingTransport, WorkerPool, RecordingObserver> monitor(rig.io.get_executor(), timing,
                                                                               rig.pool, options, rig.observer());
  monitor.start();  // registered before start: the first round pings them all
  REQUIRE(run_until(rig.io, [&] { return timing.sent.size() >= 20; }, 5s));
  monitor.stop();
  run_ready(rig.io);
  const auto first_round = std::vector(timing.sent.begin(), timing.sent.begin() + 20);
  std::set<std::string> pinged;
  for (const auto& [at, id] : first_round) pinged.insert(id);
  CHECK(pinged.size() == 20);  // each once
  // Slice i of 20 goes out at i/20 of the interval from the round's start,
  // never earlier (a timer does not fire early): the last one at least 19/20
  // of the interval after the first, where a burst would send all at once.
  CHECK(first_round.back().first - first_round.front().first >= options.interval * 19 / 20);
  // The first slice is the first worker alone.
  CHECK(first_round[1].first - first_round[0].first >= options.interval / 20);
}
