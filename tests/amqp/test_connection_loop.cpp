// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// detail::ConnectionLoop, the one connection thread under the job source,
// status sink and event publisher, with a ConnectionWork of the test's own,
// against the fixture's RabbitMQ.

#include "amqp/connection_loop.hpp"

#include "amqp_test_support.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <algorithm>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;
using blacktree::amqp::AmqpOptions;
namespace amqp = blacktree::amqp;
namespace core = blacktree::core;
namespace t = blacktree::amqp::test;

// What the loop did, seen from the test's thread.
struct Seen {
  std::atomic<int> connected{0}, ready{0}, disconnected{0}, woken_offline{0}, stopping{0};
  std::atomic<bool> asked{false};      // the test asks for one turn of work...
  std::atomic<bool> done{false};       // ...and the work did it
  std::atomic<bool> fail_once{false};  // the next turn fails
};

class Work final : public amqp::detail::ConnectionWork {
 public:
  Work(std::shared_ptr<Seen> seen, std::string queue) : seen_(std::move(seen)), queue_(std::move(queue)) {}

  core::Result<void> on_connected(amqp::detail::Connection& conn) override {
    ++seen_->connected;
    return conn.declare_queue(1, queue_);
  }
  core::Result<void> on_ready(amqp::detail::Connection&) override {
    ++seen_->ready;
    if (seen_->fail_once.exchange(false)) return core::Error{amqp::errc::publish_failed, "the test's failure"};
    if (seen_->asked.exchange(false)) seen_->done = true;
    return {};
  }
  void on_disconnected() override { ++seen_->disconnected; }
  void on_woken_offline() override { ++seen_->woken_offline; }
  core::Result<void> on_stopping(amqp::detail::Connection&) override {
    ++seen_->stopping;
    return {};
  }

 private:
  std::shared_ptr<Seen> seen_;
  std::string queue_;
};

// Performs the race between stop() and the loop's turn: stop() comes after
// the loop checked for it, and its wake-up is taken by a drain before the
// loop waits for traffic (here the first turn drains it itself, once stop()
// has notified the waker).
class EatsStopWakeup final : public amqp::detail::ConnectionWork {
 public:
  EatsStopWakeup(amqp::detail::ConnectionLoop& loop, std::promise<void>& in_turn, std::atomic<bool>& stopped)
      : loop_(loop), in_turn_(in_turn), stopped_(stopped) {}

  core::Result<void> on_connected(amqp::detail::Connection&) override { return {}; }
  core::Result<void> on_ready(amqp::detail::Connection&) override {
    if (turns_++ > 0) return {};
    in_turn_.set_value();
    pollfd waker{loop_.waker().fd(), POLLIN, 0};
    if (::poll(&waker, 1, 30'000) == 1) loop_.waker().drain();  // stop()'s wake-up, eaten
    return {};
  }
  core::Result<void> on_stopping(amqp::detail::Connection&) override {
    stopped_ = true;
    return {};
  }

 private:
  amqp::detail::ConnectionLoop& loop_;
  std::promise<void>& in_turn_;
  std::atomic<bool>& stopped_;  // on_stopping ran
  int turns_ = 0;
};

AmqpOptions loop_options() {
  AmqpOptions o;
  o.url = t::broker_url();
  o.reconnect_initial = 20ms;
  o.reconnect_max = 100ms;
  o.heartbeat = 5s;
  return o;
}

amqp::AmqpEndpoint endpoint_of(const AmqpOptions& o) { return std::move(*amqp::resolve_endpoint(o)); }

}  // namespace

TEST_CASE("amqp: the connection loop connects, works when woken, and settles at stop", "[amqp]") {
  auto seen = std::make_shared<Seen>();
  const AmqpOptions o = loop_options();
  const std::string queue = t::unique_name("loop");
  amqp::detail::ConnectionLoop loop(o, endpoint_of(o), "loop-test");
  loop.start(std::make_unique<Work>(seen, queue));
  REQUIRE(t::eventually([&] { return loop.connected(); }));
  CHECK(loop.connects() == 1);
  CHECK(seen->connected == 1);
  t::Client control;
  CHECK(control.ready(queue) == 0);  // on_connected declared it

  seen->asked = true;
  loop.wake();
  REQUIRE(t::eventually([&] { return seen->done.load(); }));

  loop.stop();
  CHECK_FALSE(loop.connected());
  CHECK(seen->stopping == 1);
  CHECK(seen->disconnected == 1);
  CHECK(loop.last_error().empty());
  loop.stop();  // idempotent
}

TEST_CASE("amqp: a failed turn tears the connection down and the loop connects again", "[amqp]") {
  auto seen = std::make_shared<Seen>();
  const AmqpOptions o = loop_options();
  amqp::detail::ConnectionLoop loop(o, endpoint_of(o), "loop-test");
  loop.start(std::make_unique<Work>(seen, t::unique_name("loop")));
  REQUIRE(t::eventually([&] { return loop.connected(); }));

  seen->fail_once = true;
  loop.wake();
  REQUIRE(t::eventually([&] { return loop.connects() == 2 && loop.connected(); }));
  CHECK(seen->connected == 2);
  CHECK(seen->disconnected == 1);
  CHECK(loop.last_error() == "the test's failure");
  loop.stop();
}

TEST_CASE("amqp: the connection loop retries an unreachable broker until stopped", "[amqp]") {
  auto seen = std::make_shared<Seen>();
  AmqpOptions o = loop_options();
  o.url = "amqp://guest:guest@127.0.0.1:1/";  // nothing listens on port 1
  amqp::detail::ConnectionLoop loop(o, endpoint_of(o), "loop-test");
  loop.start(std::make_unique<Work>(seen, "unused"));
  REQUIRE(t::eventually([&] { return !loop.last_error().empty(); }));
  CHECK(loop.last_error().find("cannot connect to amqp://127.0.0.1:1/") != std::string::npos);

  // Work asked for while there is no connection is the work's to drop.
  loop.wake();
  REQUIRE(t::eventually([&] { return seen->woken_offline > 0; }));

  const auto before = std::chrono::steady_clock::now();
  loop.stop();
  CHECK(std::chrono::steady_clock::now() - before < 2s);  // a stop wakes the retry wait
  CHECK(loop.connects() == 0);
  CHECK(seen->connected == 0);
  CHECK(seen->stopping == 0);
}

TEST_CASE("amqp: the connection loop goes to the next broker address after a failure or a lost connection",
          "[amqp]") {
  auto seen = std::make_shared<Seen>();
  AmqpOptions o = loop_options();
  const std::string port = std::to_string(t::broker_port());
  // Three addresses: a dead one, then the fixture's broker under two names,
  // so that where() tells which address a connection went to.
  o.url = "amqp://guest:guest@127.0.0.1:1/,amqp://guest:guest@127.0.0.1:" + port +
          "/,amqp://guest:guest@localhost:" + port + "/";
  auto brokers = amqp::detail::resolve_brokers(o);
  REQUIRE(brokers);
  std::vector<std::string> lines;
  std::mutex lines_mutex;
  o.log = [&](amqp::LogLevel, std::string_view line) {
    std::lock_guard lock(lines_mutex);
    lines.emplace_back(line);
  };
  amqp::detail::ConnectionLoop loop(o, std::move(*brokers), "loop-test");
  CHECK(loop.where() == "amqp://127.0.0.1:1/,amqp://127.0.0.1:" + port + "/,amqp://localhost:" + port + "/");
  loop.start(std::make_unique<Work>(seen, t::unique_name("loop")));
  // The dead node fails, the next one takes the connection.
  REQUIRE(t::eventually([&] { return loop.connected(); }));
  CHECK(loop.connects() == 1);
  CHECK(loop.where() == "amqp://127.0.0.1:" + port + "/");
  {
    std::lock_guard lock(lines_mutex);
    CHECK(std::count_if(lines.begin(), lines.end(), [](const std::string& l) {
            return l.find("cannot connect to amqp://127.0.0.1:1/") != std::string::npos;
          }) == 1);
    CHECK(lines.back() == "amqp loop-test: connected again to amqp://127.0.0.1:" + port + "/");
  }

  // The connection is lost: the next one goes to the next address.
  seen->fail_once = true;
  loop.wake();
  REQUIRE(t::eventually([&] { return loop.connects() == 2 && loop.connected(); }));
  CHECK(loop.where() == "amqp://localhost:" + port + "/");
  // And round again: the dead one, then the first live one.
  seen->fail_once = true;
  loop.wake();
  REQUIRE(t::eventually([&] { return loop.connects() == 3 && loop.connected(); }));
  CHECK(loop.where() == "amqp://127.0.0.1:" + port + "/");
  loop.stop();
  CHECK(loop.where() == "amqp://127.0.0.1:1/,amqp://127.0.0.1:" + port + "/,amqp://localhost:" + port + "/");
}

TEST_CASE("amqp: corked sends cork the socket for a run of publishes, uncork it after, and the broker has them all",
          "[amqp]") {
  const AmqpOptions o = loop_options();
  amqp::detail::Connection conn;
  REQUIRE(conn.open(endpoint_of(o), o, "cork-test"));
  const std::string queue = t::unique_name("cork");
  REQUIRE(conn.declare_queue(1, queue));
  REQUIRE(conn.confirm_select(1));
  const auto corked = [&] {
    int value = -1;
    socklen_t size = sizeof value;
    REQUIRE(::getsockopt(conn.fd(), IPPROTO_TCP, TCP_CORK, &value, &size) == 0);
    return value;
  };

  {
    const amqp::detail::CorkedSends single(conn, 1);
    CHECK(corked() == 0);  // one message goes out as it always did
  }
  constexpr int run = 3;
  {
    const amqp::detail::CorkedSends batch(conn, run);
    CHECK(corked() == 1);
    for (int i = 0; i < run; ++i)
      REQUIRE(amqp_basic_publish(conn.get(), 1, amqp_empty_bytes, amqp::detail::to_bytes(queue), 0, 0, nullptr,
                                 amqp_cstring_bytes("corked")) == AMQP_STATUS_OK);
  }
  CHECK(corked() == 0);  // nothing is left held

  // The broker has the whole run: it confirms every publish.
  std::uint64_t confirmed = 0;
  while (confirmed < run) {
    amqp_frame_t frame{};
    timeval wait_at_most{10, 0};
    REQUIRE(amqp_simple_wait_frame_noblock(conn.get(), &frame, &wait_at_most) == AMQP_STATUS_OK);
    if (frame.frame_type != AMQP_FRAME_METHOD || frame.payload.method.id != AMQP_BASIC_ACK_METHOD) continue;
    confirmed = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded)->delivery_tag;
  }
  t::Client control;
  CHECK(control.ready(queue) == run);
  conn.close();
}

TEST_CASE("amqp: a stop whose wake-up a turn took still ends the loop without waiting for traffic", "[amqp]") {
  AmqpOptions o = loop_options();
  // Without the stop check before the wait, the loop would sleep for a
  // heartbeat interval, or until stop() shut the socket down after twice
  // connect_timeout: both far beyond the bound below.
  o.heartbeat = 120s;
  o.connect_timeout = 60s;
  amqp::detail::ConnectionLoop loop(o, endpoint_of(o), "loop-test");
  std::promise<void> in_turn;
  std::atomic<bool> polite{false};
  loop.start(std::make_unique<EatsStopWakeup>(loop, in_turn, polite));
  REQUIRE(in_turn.get_future().wait_for(30s) == std::future_status::ready);
  CHECK(loop.connected());

  auto stopped = std::async(std::launch::async, [&loop] { loop.stop(); });
  CHECK(stopped.wait_for(10s) == std::future_status::ready);
  stopped.get();
  CHECK(polite);  // on_stopping ran on the live connection
}
