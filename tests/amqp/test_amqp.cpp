// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree::amqp against a real RabbitMQ (the ctest fixture's). Each test
// uses queues and exchanges of its own, so they can run in any order; the
// [restart] ones stop and start the broker and run alone (RUN_SERIAL).

#include <blacktree/amqp/amqp.hpp>

#include "amqp_test_support.hpp"
#include "test_support.hpp"

#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/worker_pool.hpp>
#include <blacktree/wire/wire.hpp>
#include <blacktree/worker/build_spec.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include <algorithm>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <vector>

namespace {

using namespace std::chrono_literals;
using blacktree::amqp::AmqpDelivery;
using blacktree::amqp::AmqpEventPublisher;
using blacktree::amqp::AmqpJobSource;
using blacktree::amqp::AmqpOptions;
using blacktree::amqp::AmqpStatusSink;
namespace core = blacktree::core;
namespace t = blacktree::amqp::test;
using blacktree::test::run_until;

AmqpOptions test_options(const std::string& stem) {
  AmqpOptions o;
  o.url = t::broker_url();
  const std::string base = t::unique_name(stem);
  o.execute_queue = base + ".execute";
  o.status_queue = base + ".status";
  o.dead_letter_exchange = base + ".dlx";
  o.dead_letter_queue = base + ".dlq";
  o.events_exchange = base + ".events";
  o.connection_name = "blacktree-test " + stem;
  o.reconnect_initial = 50ms;
  o.reconnect_max = 500ms;
  o.heartbeat = 5s;
  return o;
}

/// Collects what the adapters log through AmqpOptions::log.
struct LogLines {
  std::mutex mutex;
  std::vector<std::string> lines;
  void attach(AmqpOptions& o) {
    o.log = [this](blacktree::amqp::LogLevel, std::string_view line) {
      std::lock_guard lock(mutex);
      lines.emplace_back(line);
    };
  }
  std::size_t count(const std::string& part) {
    std::lock_guard lock(mutex);
    return static_cast<std::size_t>(
        std::count_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(part) != std::string::npos; }));
  }
};

std::string job_json(const std::string& id, const std::string& extra = "") {
  return R"({"jobId":")" + id +
         R"(","repoUrl":"octo/hello","branch":"main","dockerfilePath":"Dockerfile","contextDir":".",)"
         R"("imageName":"registry.example/hello:1","githubToken":"ghp_secret")" +
         extra + "}";
}

/// One async_receive, driven on `io` until it completes or `timeout` passes
/// (then it is cancelled through its slot, which must complete it too).
struct Received {
  std::error_code ec;
  AmqpDelivery delivery;
  bool completed = false;
};
Received receive(asio::io_context& io, AmqpJobSource& source, std::chrono::milliseconds timeout = 15s) {
  auto result = std::make_shared<Received>();
  asio::cancellation_signal cancel;
  source.async_receive(asio::bind_cancellation_slot(cancel.slot(), [result](std::error_code ec, AmqpDelivery d) {
    result->ec = ec;
    result->delivery = std::move(d);
    result->completed = true;
  }));
  if (!run_until(io, [&] { return result->completed; }, timeout)) {
    cancel.emit(asio::cancellation_type::terminal);
    REQUIRE(run_until(io, [&] { return result->completed; }, 5s));
  }
  return std::move(*result);
}

std::error_code publish_status(asio::io_context& io, AmqpStatusSink& sink, const core::JobResult& result) {
  std::optional<std::error_code> outcome;
  sink.async_publish(result, [&](std::error_code ec) { outcome = ec; });
  REQUIRE(run_until(io, [&] { return outcome.has_value(); }, 15s));
  return *outcome;
}

// A queue that gets every job's events from `o`'s events exchange, for a test
// to read them; its name.
std::string tap_events(t::Client& reader, const AmqpOptions& o) {
  const std::string queue = o.events_exchange + ".tap";
  reader.declare_queue(queue);
  reader.bind(queue, o.events_exchange, "job.#");
  return queue;
}

// Progress and final results to the events exchange, as amqp.hpp shows.
struct EventObserver : core::DispatcherObserver {
  static constexpr bool wants_progress = true;
  AmqpEventPublisher* events;
  void on_progress(const core::ProgressEvent& e) { events->publish(e); }
  void on_finished(const core::Job& job, const core::JobResult& r) {
    events->publish_result({job.id, r.worker_id, core::Phase::finished, {}}, r);
  }
};

}  // namespace

TEST_CASE("amqp: a bad MQ_URL is refused with a message that hides the password", "[amqp]") {
  asio::io_context io;
  AmqpOptions o;
  o.url = "http://user:hunter2@host/";
  try {
    AmqpJobSource source(io.get_executor(), o);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("hunter2") == std::string::npos);
    CHECK(std::string(e.what()).find("amqp://") != std::string::npos);
  }
  AmqpOptions ok;
  ok.url = "amqp://u:hunter2@example.org:5673";
  auto endpoint = blacktree::amqp::resolve_endpoint(ok);
  REQUIRE(endpoint);
  CHECK(endpoint->vhost == "/");
  CHECK(endpoint->port == 5673);
  CHECK(endpoint->describe() == "amqp://example.org:5673/");
  ok.url = "amqps://u:p@example.org/prod";
  endpoint = blacktree::amqp::resolve_endpoint(ok);
  REQUIRE(endpoint);
  CHECK(endpoint->tls);
  CHECK(endpoint->port == 5671);
  CHECK(endpoint->vhost == "prod");
}

TEST_CASE("amqp: an unreachable broker is reported, not fatal", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("unreachable");
  o.url = "amqp://guest:secretpw@127.0.0.1:1/";  // nothing listens on port 1
  LogLines log;
  log.attach(o);
  AmqpJobSource source(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return !source.last_error().empty(); }));
  // Logged, once however often it is retried, and without the password.
  REQUIRE(t::eventually([&] { return source.stats().connects == 0 && log.count("") >= 1; }));
  CHECK(log.count("amqp source: cannot connect to amqp://127.0.0.1:1/") == 1);
  CHECK(log.count("secretpw") == 0);
  const std::string error = source.last_error();
  INFO(error);
  CHECK(error.find("cannot connect to amqp://127.0.0.1:1/") != std::string::npos);
  CHECK(error.find("refused") != std::string::npos);
  CHECK(error.find("secretpw") == std::string::npos);
  CHECK_FALSE(source.connected());
  source.stop();
}

TEST_CASE("amqp: publish, receive, ack, with unknown fields ignored", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("roundtrip");
  t::Client client;
  client.declare_queue(o.execute_queue);
  client.publish(o.execute_queue, job_json("job-1", R"(,"futureField":{"x":[1,2]},"region":"eu-west-1")"));

  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(4);
  Received r = receive(io, source);
  REQUIRE_FALSE(r.ec);
  const core::Job& job = r.delivery.job();
  CHECK(r.delivery.invalid_reason().empty());
  CHECK(job.id == "job-1");
  const auto* spec = job.payload.get<blacktree::worker::BuildSpec>();
  REQUIRE(spec);
  CHECK(spec->repo_url == "octo/hello");
  CHECK(spec->branch == "main");
  CHECK(spec->image_name == "registry.example/hello:1");
  CHECK(spec->github_token.reveal() == "ghp_secret");
  CHECK_FALSE(job.redelivered);
  CHECK(source.connected());
  source.ack(r.delivery);
  CHECK_FALSE(r.delivery.pending());
  REQUIRE(t::eventually([&] { return source.stats().acked == 1; }));
  source.stop();
  // Acked, not requeued by the close: the queue is empty.
  CHECK(client.ready(o.execute_queue) == 0);

  // After stop, receives fail at once with source_closed.
  Received after = receive(io, source);
  CHECK(after.ec == core::errc::source_closed);
}

TEST_CASE("amqp: malformed and incomplete messages are dead-lettered with the reason", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("deadletter");
  t::Client client;
  client.declare_queue(o.execute_queue);
  client.publish(o.execute_queue, "this is {not json");
  client.publish(o.execute_queue, R"({"jobId":"half-a-job","repoUrl":"octo/hello"})");

  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(2);
  Received bad = receive(io, source);
  REQUIRE_FALSE(bad.ec);
  CHECK_FALSE(bad.delivery.invalid_reason().empty());
  CHECK(bad.delivery.job().id.empty());
  Received half = receive(io, source);
  REQUIRE_FALSE(half.ec);
  CHECK_FALSE(half.delivery.invalid_reason().empty());
  CHECK(half.delivery.job().id == "half-a-job");

  const std::string bad_reason(bad.delivery.invalid_reason());
  const std::string half_reason(half.delivery.invalid_reason());
  source.reject(bad.delivery, core::Disposition::dead_letter, bad_reason);
  source.reject(half.delivery, core::Disposition::dead_letter, half_reason);
  REQUIRE(t::eventually([&] { return source.stats().dead_lettered == 2; }));

  t::Client reader;
  std::map<std::string, t::Message> by_body;
  for (int i = 0; i < 2; ++i) {
    auto m = reader.get(o.dead_letter_queue);
    REQUIRE(m);
    by_body[m->body] = *m;
  }
  REQUIRE(by_body.count("this is {not json") == 1);
  const t::Message& m1 = by_body["this is {not json"];
  CHECK(m1.headers.at("x-blacktree-reason") == bad_reason);
  CHECK(m1.headers.at("x-original-routing-key") == o.execute_queue);
  CHECK(m1.delivery_mode == 2);
  const t::Message& m2 = by_body[R"({"jobId":"half-a-job","repoUrl":"octo/hello"})"];
  CHECK(m2.headers.at("x-blacktree-reason") == half_reason);
  INFO("reasons: " << bad_reason << " | " << half_reason);
  source.stop();
  CHECK(client.ready(o.execute_queue) == 0);  // acked once dead-lettered, not requeued
}

TEST_CASE("amqp: the prefetch bounds unacknowledged deliveries and 0 delivers nothing", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("prefetch");
  t::Client client;
  client.declare_queue(o.execute_queue);
  for (int i = 0; i < 10; ++i) client.publish(o.execute_queue, job_json("p" + std::to_string(i)));

  AmqpJobSource source(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return source.connected(); }));

  // Prefetch 0 (the default until set_prefetch): AMQP would read it as
  // "unlimited"; here it means no consumer at all.
  Received none = receive(io, source, 1500ms);
  CHECK(none.ec == asio::error::operation_aborted);
  CHECK(source.stats().delivered == 0);
  CHECK(t::list_queues("messages_unacknowledged")[o.execute_queue] == 0);

  source.set_prefetch(3);
  std::vector<AmqpDelivery> held;
  for (int i = 0; i < 3; ++i) {
    Received r = receive(io, source);
    REQUIRE_FALSE(r.ec);
    held.push_back(std::move(r.delivery));
  }
  // A fourth never comes while three are unsettled.
  Received fourth = receive(io, source, 1500ms);
  CHECK(fourth.ec == asio::error::operation_aborted);
  CHECK(source.stats().delivered == 3);
  CHECK(t::list_queues("messages_unacknowledged")[o.execute_queue] == 3);

  // Raising it takes effect on the running consumer.
  source.set_prefetch(5);
  for (int i = 0; i < 2; ++i) {
    Received r = receive(io, source);
    REQUIRE_FALSE(r.ec);
    held.push_back(std::move(r.delivery));
  }
  REQUIRE(t::eventually([&] { return t::list_queues("messages_unacknowledged")[o.execute_queue] == 5; }));

  // Acking one makes room for exactly one more.
  source.ack(held.front());
  Received next = receive(io, source);
  REQUIRE_FALSE(next.ec);
  held.push_back(std::move(next.delivery));
  CHECK(t::list_queues("messages_unacknowledged")[o.execute_queue] <= 5);

  // Back to 0: the consumer goes; held deliveries can still be settled.
  source.set_prefetch(0);
  for (auto& d : held) source.ack(d);
  REQUIRE(t::eventually([&] { return source.stats().acked == 6; }));
  REQUIRE(t::eventually([&] { return t::list_queues("messages_unacknowledged")[o.execute_queue] == 0; }));
  CHECK(client.ready(o.execute_queue) == 4);
  source.stop();
}

TEST_CASE("amqp: a batch receive, or a take without a wait, hands over what is buffered, and a run of acks is one multiple ack",
          "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("batches");
  LogLines log;  // with each delivery and ack frame (log_deliveries)
  log.attach(o);
  o.log_deliveries = true;
  t::Client client;
  client.declare_queue(o.execute_queue);
  for (int i = 0; i < 20; ++i) client.publish(o.execute_queue, job_json("b" + std::to_string(i)));
  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(20);
  REQUIRE(t::eventually([&] { return source.stats().delivered == 20; }));  // all buffered

  auto receive_some = [&](std::size_t max) {
    std::optional<std::vector<AmqpDelivery>> got;
    source.async_receive_some(max, [&](std::error_code ec, std::vector<AmqpDelivery> ds) {
      CHECK_FALSE(ec);
      got = std::move(ds);
    });
    REQUIRE(run_until(io, [&] { return got.has_value(); }, 15s));
    return std::move(*got);
  };
  std::vector<AmqpDelivery> held = receive_some(8);
  CHECK(held.size() == 8);
  for (auto& d : receive_some(50)) held.push_back(std::move(d));
  REQUIRE(held.size() == 20);
  for (int i = 0; i < 20; ++i) CHECK(held[static_cast<std::size_t>(i)].job().id == "b" + std::to_string(i));

  // All but the sixth in one call: the five below it go as one multiple
  // ack, the fourteen above it one by one (a multiple ack would settle the
  // sixth too).
  AmqpDelivery sixth = std::move(held[5]);
  held.erase(held.begin() + 5);
  source.ack(std::span<AmqpDelivery>(held));
  REQUIRE(t::eventually([&] { return source.stats().acked == 19; }));
  CHECK(source.stats().ack_frames == 15);
  CHECK(log.count("delivery 1/1: job b0") == 1);
  CHECK(log.count("delivery 1/20: job b19") == 1);
  CHECK(log.count("acked on connection 1: up to 5 (multiple, 5) 7 8 9 10 11 12 13 14 15 16 17 18 19 20; "
                  "lowest unsettled 6") == 1);
  REQUIRE(t::eventually([&] { return t::list_queues("messages_unacknowledged")[o.execute_queue] == 1; }));
  source.ack(sixth);
  REQUIRE(t::eventually([&] { return source.stats().acked == 20; }));
  CHECK(source.stats().ack_frames == 16);
  REQUIRE(t::eventually([&] { return t::list_queues("messages_unacknowledged")[o.execute_queue] == 0; }));
  CHECK(client.ready(o.execute_queue) == 0);

  // A run with nothing unsettled below it: twenty acks, one frame. Taken
  // without a wait this time (TakesReady), in order, then nothing is left.
  CHECK(source.try_receive_some(5).empty());
  for (int i = 0; i < 20; ++i) client.publish(o.execute_queue, job_json("c" + std::to_string(i)));
  REQUIRE(t::eventually([&] { return source.stats().delivered == 40; }));
  held = source.try_receive_some(15);
  CHECK(held.size() == 15);
  for (auto& d : source.try_receive_some(50)) held.push_back(std::move(d));
  REQUIRE(held.size() == 20);
  for (int i = 0; i < 20; ++i) CHECK(held[static_cast<std::size_t>(i)].job().id == "c" + std::to_string(i));
  CHECK(source.try_receive_some(5).empty());
  source.ack(std::span<AmqpDelivery>(held));
  REQUIRE(t::eventually([&] { return source.stats().acked == 40; }));
  CHECK(source.stats().ack_frames == 17);
  REQUIRE(t::eventually([&] { return t::list_queues("messages_unacknowledged")[o.execute_queue] == 0; }));
  CHECK(client.ready(o.execute_queue) == 0);
  client.publish(o.execute_queue, job_json("d0"));
  REQUIRE(t::eventually([&] { return source.stats().delivered == 41; }));
  source.stop();
  CHECK(source.try_receive_some(5).empty());  // stopped: what was buffered went back to the broker
}

TEST_CASE("amqp: cancel_consumer stops deliveries for good and requeues what was buffered", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("cancel");
  t::Client client;
  client.declare_queue(o.execute_queue);
  for (int i = 0; i < 3; ++i) client.publish(o.execute_queue, job_json("c" + std::to_string(i)));
  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(3);
  Received first = receive(io, source);
  REQUIRE_FALSE(first.ec);
  // The other two are (or soon will be) buffered in the source, unacked.
  REQUIRE(t::eventually([&] { return source.stats().delivered == 3; }));
  source.cancel_consumer();
  source.set_prefetch(10);  // what a dispatcher might still say: no effect now
  REQUIRE(t::eventually([&] { return source.stats().requeued == 2; }));
  Received none = receive(io, source, 1000ms);
  CHECK(none.ec == asio::error::operation_aborted);
  source.ack(first.delivery);
  source.stop();  // the ack still goes out
  CHECK(client.ready(o.execute_queue) == 2);
}

TEST_CASE("amqp: an idle connection survives several heartbeat intervals", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("heartbeat");
  o.heartbeat = std::chrono::seconds(1);
  AmqpJobSource source(io.get_executor(), o);
  AmqpStatusSink sink(io.get_executor(), o);
  AmqpEventPublisher publisher(o);
  REQUIRE(t::eventually([&] { return source.connected() && sink.connected() && publisher.connected(); }));
  // Nothing happens for 4 heartbeat intervals: both sides must keep the
  // connections alive with heartbeats alone (the broker drops a silent one
  // after two). This waits on time itself, which is what is under test.
  std::this_thread::sleep_for(4s);
  CHECK(source.connected());
  CHECK(sink.connected());
  CHECK(publisher.connected());
  CHECK(source.stats().connects == 1);
  CHECK(sink.stats().connects == 1);
  CHECK(publisher.stats().connects == 1);
  core::JobResult r;
  r.job_id = "after-idle";
  CHECK_FALSE(publish_status(io, sink, r));
}

TEST_CASE("amqp: deliveries of a dead channel come back marked redelivered", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("redelivered");
  t::Client client;
  client.declare_queue(o.execute_queue);
  client.publish(o.execute_queue, job_json("again"));

  AmqpDelivery kept;
  {
    AmqpJobSource first(io.get_executor(), o);
    first.set_prefetch(1);
    Received r = receive(io, first);
    REQUIRE_FALSE(r.ec);
    CHECK_FALSE(r.delivery.job().redelivered);
    kept = std::move(r.delivery);
    first.stop();  // the channel dies with the job unacked
  }
  // Settling a delivery of a connection that is gone does nothing (and does not crash).
  AmqpJobSource second(io.get_executor(), o);
  second.set_prefetch(1);
  Received r = receive(io, second);
  REQUIRE_FALSE(r.ec);
  CHECK(r.delivery.job().id == "again");
  CHECK(r.delivery.job().redelivered);
  kept = AmqpDelivery{};

  // A delivery dropped unsettled is requeued, redelivered to the same source.
  r.delivery = AmqpDelivery{};
  Received again = receive(io, second);
  REQUIRE_FALSE(again.ec);
  CHECK(again.delivery.job().id == "again");
  CHECK(again.delivery.job().redelivered);
  second.ack(again.delivery);
  second.stop();
  CHECK(client.ready(o.execute_queue) == 0);
}

TEST_CASE("amqp: a delivery the source gave back unseen comes back not marked redelivered", "[amqp]") {
  // Its redelivery is no news: nobody could have a status of it, and no
  // worker can run it, so the dispatcher must not wait for one (carrier_wait).
  asio::io_context io;
  AmqpOptions o = test_options("unseen");
  t::Client client;
  client.declare_queue(o.execute_queue);
  for (int i = 0; i < 3; ++i) client.publish(o.execute_queue, job_json("u" + std::to_string(i)));
  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(3);
  Received first = receive(io, source);
  REQUIRE_FALSE(first.ec);
  REQUIRE(t::eventually([&] { return source.stats().delivered == 3; }));  // two buffered, never handed out
  source.set_prefetch(0);  // the consumer goes: the buffered two go back to the queue
  REQUIRE(t::eventually([&] { return source.stats().requeued == 2; }));
  source.set_prefetch(3);
  for (int i = 0; i < 2; ++i) {
    Received r = receive(io, source);
    REQUIRE_FALSE(r.ec);
    CHECK(r.delivery.job().id != first.delivery.job().id);
    CHECK_FALSE(r.delivery.job().redelivered);
    source.ack(r.delivery);
  }
  // One that was handed out and dropped unsettled is redelivered, and says so.
  const std::string handed_out = first.delivery.job().id;
  first.delivery = AmqpDelivery{};
  Received again = receive(io, source);
  REQUIRE_FALSE(again.ec);
  CHECK(again.delivery.job().id == handed_out);
  CHECK(again.delivery.job().redelivered);
  source.ack(again.delivery);
  source.stop();
  CHECK(client.ready(o.execute_queue) == 0);
}

TEST_CASE("amqp: deliveries whose connection was lost are reported running until settled, then acked ones settled",
          "[amqp][peers]") {
  // What an orchestrator tells its peers (AmqpPeers): the broker has these
  // back, and may redeliver them to another orchestrator, while they run here.
  asio::io_context io;
  AmqpOptions o = test_options("lost");
  o.connection_name = t::unique_name("lost");
  t::Client client;
  client.declare_queue(o.execute_queue);
  for (const char* id : {"l1", "l2"}) client.publish(o.execute_queue, job_json(id));
  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(2);
  Received first = receive(io, source);
  Received second = receive(io, source);
  REQUIRE_FALSE(first.ec);
  REQUIRE_FALSE(second.ec);
  auto lost = source.lost_deliveries(60s);
  CHECK(lost.running.empty());  // their connection lives
  CHECK(lost.settled.empty());

  REQUIRE(t::close_connections_named(o.connection_name + " source") == 1);
  REQUIRE(t::eventually([&] { return source.stats().connects == 2 && source.connected(); }));
  lost = source.lost_deliveries(60s);
  std::sort(lost.running.begin(), lost.running.end());
  CHECK(lost.running == std::vector<std::string>{"l1", "l2"});
  CHECK(lost.settled.empty());
  // The broker gives them to the new connection, redelivered: those are not lost.
  Received again = receive(io, source);
  REQUIRE_FALSE(again.ec);
  CHECK(again.delivery.job().redelivered);
  CHECK(source.lost_deliveries(60s).running.size() == 2);

  // Acked (its status is out): reported settled. Requeued: no longer anything.
  const std::string acked_id = first.delivery.job().id;
  source.ack(first.delivery);
  source.reject(second.delivery, core::Disposition::requeue, "test");
  lost = source.lost_deliveries(60s);
  CHECK(lost.running.empty());
  CHECK(lost.settled == std::vector<std::string>{acked_id});
  CHECK(source.lost_deliveries(0ms).settled.empty());  // only those acked within the window
  source.ack(again.delivery);
  source.stop();
}

TEST_CASE("amqp: orchestrators on one queue hear what each other runs, not their own nor another queue's",
          "[amqp][peers]") {
  AmqpOptions o = test_options("peers");
  o.peers_exchange = o.execute_queue + ".peers";
  o.peers_interval = 50ms;
  struct Heard {
    std::mutex mutex;
    std::vector<blacktree::amqp::PeerNews> news;
    std::size_t size() {
      std::lock_guard lock(mutex);
      return news.size();
    }
    blacktree::amqp::AmqpPeers::Heard fn() {
      return [this](blacktree::amqp::PeerNews n) {
        std::lock_guard lock(mutex);
        news.push_back(std::move(n));
      };
    }
  } heard_a, heard_b, heard_other;
  auto says = [](std::vector<std::string> running, std::vector<std::string> settled,
                 std::vector<std::string> carried = {}) {
    return [running, settled, carried] { return blacktree::amqp::PeerNews{{}, running, settled, carried}; };
  };
  AmqpOptions other_queue = o;
  other_queue.execute_queue += ".other";
  blacktree::amqp::AmqpPeers other(other_queue, "orch-other", says({"o1"}, {}), heard_other.fn());
  blacktree::amqp::AmqpPeers b(o, "orch-b", says({}, {}), heard_b.fn());  // nothing to say
  blacktree::amqp::AmqpPeers a(o, "orch-a", says({"r1", "r2"}, {"s1"}, {"c1"}), heard_a.fn());
  REQUIRE(t::eventually([&] { return heard_b.size() >= 2; }));  // said again every interval
  {
    std::lock_guard lock(heard_b.mutex);
    for (const auto& n : heard_b.news) {
      CHECK(n.from == "orch-a");
      CHECK(n.running == std::vector<std::string>{"r1", "r2"});
      CHECK(n.settled == std::vector<std::string>{"s1"});
      CHECK(n.carried == std::vector<std::string>{"c1"});
    }
  }
  // While both listen: another queue's orchestrator speaks, and someone writes garbage.
  const auto other_sent = other.stats().sent;
  REQUIRE(t::eventually([&] { return other.stats().sent >= other_sent + 2; }));
  t::Client client;
  client.publish("", "not a PeerRuns", o.peers_exchange);
  REQUIRE(t::eventually([&] { return a.stats().malformed == 1 && b.stats().malformed == 1; }));
  a.stop();
  b.stop();
  other.stop();
  CHECK(heard_a.size() == 0);      // its own, and b said nothing
  CHECK(b.stats().sent == 0);
  CHECK(heard_other.size() == 0);  // another queue's orchestrators are not its peers
  CHECK(a.stats().heard == 0);
  CHECK(a.stats().sent >= 2);
}

TEST_CASE("amqp: a status the broker refuses (nack) fails, and the sink starts a new connection", "[amqp]") {
  // A quorum queue whose leader went with a node can leave a channel that
  // nacks every publish; a new connection (to the next node) starts afresh.
  // Here a policy makes the queue refuse every publish (max-length 0).
  asio::io_context io;
  AmqpOptions o = test_options("nacked");
  const std::string policy = t::unique_name("nack");
  REQUIRE(t::run_script("ctl", "set_policy --apply-to queues " + policy + " '^" + o.status_queue +
                                   "$' '{\"max-length\":0,\"overflow\":\"reject-publish\"}'") == 0);
  AmqpStatusSink sink(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return sink.connected(); }));
  core::JobResult r;
  r.job_id = "refused";
  r.success = true;
  CHECK(publish_status(io, sink, r) == core::errc::sink_unavailable);
  CHECK(sink.stats().published == 1);  // it went out, and was nacked
  REQUIRE(t::eventually([&] { return sink.stats().connects >= 2 && sink.connected(); }));
  CHECK(sink.last_error().find("refused (nacked) a status; reconnecting") != std::string::npos);
  CHECK(sink.stats().confirmed == 0);
  REQUIRE(t::run_script("ctl", "clear_policy " + policy) == 0);
  REQUIRE(t::eventually([&] { return !publish_status(io, sink, r); }));
  CHECK(sink.stats().confirmed == 1);
  sink.stop();
}

TEST_CASE("amqp: the status sink confirms, and the status is the seed's JSON", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("status");
  AmqpStatusSink sink(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return sink.connected(); }));

  core::JobResult result;
  result.job_id = "job-42";
  result.success = true;
  result.logs = "step 1/3\nok";
  result.image_url = "registry.example/hello:1";
  result.worker_id = "w1";
  result.redelivered = true;
  REQUIRE_FALSE(publish_status(io, sink, result));
  CHECK(sink.stats().confirmed == 1);

  t::Client reader;
  auto m = reader.get(o.status_queue);
  REQUIRE(m);
  CHECK(m->delivery_mode == 2);
  CHECK(m->content_type == "application/json");
  for (const char* field : {"\"jobId\"", "\"success\"", "\"logs\"", "\"imageUrl\"", "\"error\""})
    CHECK(m->body.find(field) != std::string::npos);
  auto back = blacktree::wire::parse_job_response(m->body);
  REQUIRE(back);
  CHECK(back->job_id == "job-42");
  CHECK(back->success);
  CHECK(back->logs == "step 1/3\nok");
  CHECK(back->image_url == "registry.example/hello:1");
  CHECK(back->error.empty());
  CHECK(back->redelivered);
  sink.stop();
  // After stop, publishes fail (the dispatcher would retry elsewhere).
  CHECK(publish_status(io, sink, result) == core::errc::sink_unavailable);
}

TEST_CASE("amqp: a batch of statuses is confirmed status by status, in order, each with its message id",
          "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("status-batch");
  AmqpStatusSink sink(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return sink.connected(); }));

  std::vector<core::JobResult> results(5);
  std::vector<const core::JobResult*> view;
  for (std::size_t i = 0; i < results.size(); ++i) {
    results[i].job_id = "batch-" + std::to_string(i);
    results[i].status_id = "status-" + std::to_string(i);
    results[i].success = i % 2 == 0;
    view.push_back(&results[i]);
  }
  std::optional<std::vector<std::error_code>> codes;
  sink.async_publish_some(std::span<const core::JobResult* const>(view),
                          [&](std::vector<std::error_code> c) { codes = std::move(c); });
  REQUIRE(run_until(io, [&] { return codes.has_value(); }, 15s));
  REQUIRE(codes->size() == 5);
  for (const auto& ec : *codes) CHECK_FALSE(ec);
  CHECK(sink.stats().published == 5);
  CHECK(sink.stats().confirmed == 5);

  t::Client reader;
  for (std::size_t i = 0; i < results.size(); ++i) {
    auto m = reader.get(o.status_queue);
    REQUIRE(m);
    CHECK(m->message_id == results[i].status_id);
    auto back = blacktree::wire::parse_job_response(m->body);
    REQUIRE(back);
    CHECK(back->job_id == results[i].job_id);
    CHECK(back->success == results[i].success);
  }
  CHECK(reader.ready(o.status_queue) == 0);

  // An empty batch completes at once; after stop, each status of a batch fails.
  codes.reset();
  sink.async_publish_some(std::span<const core::JobResult* const>(),
                          [&](std::vector<std::error_code> c) { codes = std::move(c); });
  REQUIRE(run_until(io, [&] { return codes.has_value(); }, 15s));
  CHECK(codes->empty());
  sink.stop();
  codes.reset();
  sink.async_publish_some(std::span<const core::JobResult* const>(view),
                          [&](std::vector<std::error_code> c) { codes = std::move(c); });
  REQUIRE(run_until(io, [&] { return codes.has_value(); }, 15s));
  REQUIRE(codes->size() == 5);
  for (const auto& ec : *codes) CHECK(ec == core::errc::sink_unavailable);
}

TEST_CASE("amqp: progress events reach the events exchange", "[amqp]") {
  AmqpOptions o = test_options("events");
  AmqpEventPublisher publisher(o);
  REQUIRE(t::eventually([&] { return publisher.connected(); }));
  t::Client reader;
  const std::string queue = tap_events(reader, o);

  core::ProgressEvent event{"job-7", "w1", core::Phase::running, "building", "Step 2/5 : RUN make"};
  CHECK(publisher.publish(event));
  core::JobResult result;
  result.job_id = "job-7";
  result.success = true;
  CHECK(publisher.publish_result(core::ProgressEvent{"job-7", "w1", core::Phase::finished, ""}, result));
  auto first = reader.get(queue);
  REQUIRE(first);
  CHECK(first->routing_key == "job.job-7");
  CHECK(first->content_type == "application/json");
  CHECK(first->body.find("Step 2/5 : RUN make") != std::string::npos);
  auto second = reader.get(queue);
  REQUIRE(second);
  CHECK(second->routing_key == "job.job-7");
  CHECK(t::eventually([&] { return publisher.stats().published == 2; }));
  publisher.stop();
}

TEST_CASE("amqp: events buffered together go out as one batch, bare phase changes a later event supersedes left out",
          "[amqp]") {
  AmqpOptions o = test_options("events-batch");
  t::Client reader;
  reader.declare_exchange(o.events_exchange, "topic");  // the publisher is not connected yet
  const std::string queue = tap_events(reader, o);
  // The first address accepts the TCP connection and never answers, so the
  // publisher buffers until its connect timeout and then drains everything
  // to the broker, the second address, in one batch.
  asio::io_context silent_io;
  asio::ip::tcp::acceptor silent(silent_io, {asio::ip::make_address("127.0.0.1"), 0});
  o.url = "amqp://guest:guest@127.0.0.1:" + std::to_string(silent.local_endpoint().port()) + "/," + o.url;
  o.connect_timeout = 3s;
  AmqpEventPublisher publisher(o);
  core::JobResult result;
  result.job_id = "a";
  result.success = true;
  CHECK(publisher.publish({"a", "w1", core::Phase::accepted, ""}));            // superseded by a's next
  CHECK(publisher.publish({"b", "w1", core::Phase::accepted, ""}));            // b's latest: kept
  CHECK(publisher.publish({"a", "w1", core::Phase::running, "building", "Step 1/2"}));  // a line: kept
  CHECK(publisher.publish({"a", "w1", core::Phase::finished, ""}));            // superseded by the result
  CHECK(publisher.publish_result({"a", "w1", core::Phase::finished, ""}, result));
  REQUIRE_FALSE(publisher.connected());  // all five wait in the buffer
  REQUIRE(t::eventually([&] { return publisher.stats().published == 3; }, 20s));
  CHECK(publisher.stats().coalesced == 2);
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"job.b", "PHASE_ACCEPTED"}, {"job.a", "Step 1/2"}, {"job.a", "\"result\""}};
  for (const auto& [key, text] : expected) {
    auto m = reader.get(queue);
    REQUIRE(m);
    CHECK(m->routing_key == key);
    CHECK(m->body.find(text) != std::string::npos);
  }
  CHECK(reader.ready(queue) == 0);
  publisher.stop();
}

TEST_CASE("amqp: events wait for their batch window, and stop publishes what is still buffered", "[amqp]") {
  AmqpOptions o = test_options("events-window");
  o.events_batch_window = std::chrono::hours(1);  // nothing goes out but through stop()
  AmqpEventPublisher publisher(o);
  REQUIRE(t::eventually([&] { return publisher.connected(); }));
  t::Client reader;
  const std::string queue = tap_events(reader, o);
  core::JobResult result;
  result.job_id = "w";
  result.success = true;
  CHECK(publisher.publish({"w", "w1", core::Phase::accepted, ""}));
  CHECK(publisher.publish({"w", "w1", core::Phase::running, "building", "Step 1/1"}));
  CHECK(publisher.publish_result({"w", "w1", core::Phase::finished, ""}, result));
  CHECK(publisher.stats().buffered == 3);
  CHECK(publisher.stats().published == 0);
  publisher.stop();
  CHECK(publisher.stats().published == 2);  // the line and the result; the bare accepted is superseded
  CHECK(publisher.stats().coalesced == 1);
  CHECK(publisher.stats().dropped == 0);
  for (const char* text : {"Step 1/1", "\"result\""}) {
    auto m = reader.get(queue);
    REQUIRE(m);
    CHECK(m->body.find(text) != std::string::npos);
  }
  CHECK(reader.ready(queue) == 0);
  CHECK_FALSE(publisher.publish({"w", "w1", core::Phase::running, "building", "late"}));  // stopped
}

TEST_CASE("amqp: the event publisher never blocks when the broker is gone", "[amqp]") {
  AmqpOptions o = test_options("events-down");
  o.url = "amqp://guest:guest@127.0.0.1:1/";
  o.events_buffer = 100;
  AmqpEventPublisher publisher(o);
  const auto start = std::chrono::steady_clock::now();
  std::size_t accepted = 0;
  for (int i = 0; i < 10000; ++i)
    accepted += publisher.publish(core::ProgressEvent{"j", "w", core::Phase::running, "building", "line " + std::to_string(i)});
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took < 2s);  // generous for a loaded machine; a blocking publish would take forever
  CHECK(accepted == 100);
  const auto stats = publisher.stats();
  CHECK(stats.dropped == 9900);
  CHECK(stats.buffered == 100);
  CHECK_FALSE(stats.connected);
  publisher.stop();
}

TEST_CASE("amqp: amqps with a CA file, hostname check and client certificate", "[amqp][tls]") {
  asio::io_context io;
  AmqpOptions o = test_options("tls");
  const std::string tls_dir = t::broker_dir() + "/tls/";
  o.url = "amqps://guest:guest@localhost:" + std::to_string(t::broker_tls_port()) + "/";
  o.tls.ca_file = tls_dir + "ca.pem";
  o.tls.cert_file = tls_dir + "client.pem";
  o.tls.key_file = tls_dir + "client.key";
  t::Client client;
  client.declare_queue(o.execute_queue);
  client.publish(o.execute_queue, job_json("over-tls"));

  AmqpJobSource source(io.get_executor(), o);
  AmqpStatusSink sink(io.get_executor(), o);
  source.set_prefetch(1);
  Received r = receive(io, source);
  INFO(source.last_error());
  REQUIRE_FALSE(r.ec);
  CHECK(r.delivery.job().id == "over-tls");
  core::JobResult status;
  status.job_id = "over-tls";
  status.success = true;
  REQUIRE(t::eventually([&] { return sink.connected(); }));
  CHECK_FALSE(publish_status(io, sink, status));
  source.ack(r.delivery);
  source.stop();
  sink.stop();
  CHECK(client.ready(o.execute_queue) == 0);
  CHECK(client.ready(o.status_queue) == 1);
}

TEST_CASE("amqp: amqps refuses a broker whose certificate it cannot verify", "[amqp][tls]") {
  asio::io_context io;
  AmqpOptions o = test_options("tls-untrusted");
  const std::string tls_dir = t::broker_dir() + "/tls/";
  SECTION("unknown CA") {
    o.url = "amqps://guest:guest@localhost:" + std::to_string(t::broker_tls_port()) + "/";
  }
  SECTION("wrong host name") {
    o.url = "amqps://guest:guest@127.0.0.1:" + std::to_string(t::broker_tls_port()) + "/";  // the certificate names localhost
    o.tls.ca_file = tls_dir + "ca.pem";
  }
  AmqpStatusSink sink(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return !sink.last_error().empty(); }));
  INFO(sink.last_error());
  CHECK(sink.last_error().find("cannot connect to amqps://") != std::string::npos);
  CHECK(sink.last_error().find("refused") == std::string::npos);  // TLS said no, not TCP
  CHECK_FALSE(sink.connected());
  core::JobResult status;
  status.job_id = "never";
  CHECK(publish_status(io, sink, status) == core::errc::sink_unavailable);
}

TEST_CASE("amqp: a Dispatcher moves jobs from execute.queue to status.queue", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("dispatcher");
  t::Client client;
  client.declare_queue(o.execute_queue);
  constexpr int jobs = 30;
  for (int i = 0; i < jobs; ++i) client.publish(o.execute_queue, job_json("d" + std::to_string(i)));
  client.publish(o.execute_queue, R"({"jobId":"broken"})");

  AmqpJobSource source(io.get_executor(), o);
  AmqpStatusSink sink(io.get_executor(), o);
  core::LoopbackTransport transport(io.get_executor());
  core::WorkerPool pool(io.get_executor());
  for (const char* id : {"w1", "w2"}) {
    auto info = blacktree::test::make_worker(id, 2);
    transport.add_endpoint(info.address, 2);
    REQUIRE(pool.register_worker(info));
    REQUIRE(pool.mark_alive(id));
  }
  // Wired as amqp.hpp shows: final results also go out as events.
  AmqpEventPublisher events(o);
  core::Dispatcher<AmqpJobSource, core::LoopbackTransport, AmqpStatusSink, core::WorkerPool, EventObserver>
      dispatcher(io.get_executor(), source, transport, sink, pool, {}, EventObserver{{}, &events});
  dispatcher.start();
  REQUIRE(run_until(io, [&] { return dispatcher.stats().received >= jobs + 1 && dispatcher.stats().in_flight == 0; },
                    60s));
  // Each dispatched job reports Phase::accepted when its run starts and a final
  // result; the broken one never runs and has only its result. An accepted
  // event that went in one batch with its job's result is left out (coalesced).
  const bool all_events = t::eventually([&] {
    const auto s = events.stats();
    return s.published + s.coalesced == 2 * jobs + 1;
  });
  INFO("events published " << events.stats().published << ", coalesced " << events.stats().coalesced
                           << ", dropped " << events.stats().dropped);
  REQUIRE(all_events);
  CHECK(events.stats().published >= jobs + 1);  // every result
  CHECK(source.stats().prefetch == 4);
  REQUIRE(t::eventually([&] { return source.stats().dead_lettered == 1; }));

  t::Client reader;
  std::set<std::string> ids;
  for (int i = 0; i < jobs + 1; ++i) {
    auto m = reader.get(o.status_queue);
    REQUIRE(m);
    auto status = blacktree::wire::parse_job_response(m->body);
    REQUIRE(status);
    ids.insert(status->job_id);
    if (status->job_id == "broken") {
      CHECK_FALSE(status->success);
      CHECK_FALSE(status->error.empty());
    }
  }
  CHECK(ids.size() == jobs + 1);
  source.stop();
  sink.stop();
  CHECK(client.ready(o.execute_queue) == 0);
}

TEST_CASE("amqp: after a broker restart, source and sink reconnect and nothing is lost", "[amqp][restart]") {
  asio::io_context io;
  AmqpOptions o = test_options("restart");
  {
    t::Client client;
    client.declare_queue(o.execute_queue);
    for (int i = 0; i < 4; ++i) client.publish(o.execute_queue, job_json("r" + std::to_string(i)));
  }
  AmqpJobSource source(io.get_executor(), o);
  AmqpStatusSink sink(io.get_executor(), o);
  source.set_prefetch(2);
  std::vector<AmqpDelivery> held;
  for (int i = 0; i < 2; ++i) {
    Received r = receive(io, source);
    REQUIRE_FALSE(r.ec);
    held.push_back(std::move(r.delivery));
  }
  REQUIRE(t::eventually([&] { return sink.connected(); }));

  // A receive pending across the restart keeps waiting and is served afterwards.
  auto pending = std::make_shared<Received>();
  source.async_receive([pending](std::error_code ec, AmqpDelivery d) {
    pending->ec = ec;
    pending->delivery = std::move(d);
    pending->completed = true;
  });

  std::string out;
  REQUIRE(t::run_script("stop", "", &out) == 0);
  REQUIRE(t::eventually([&] { return !source.connected() && !sink.connected(); }));
  // Settling deliveries of the dead connection does nothing; the broker has them back.
  for (auto& d : held) source.ack(d);
  core::JobResult lost;
  lost.job_id = "while-down";
  CHECK(publish_status(io, sink, lost) == core::errc::sink_unavailable);
  REQUIRE(t::run_script("start", "", &out) == 0);
  INFO(out);
  REQUIRE(t::eventually([&] { return source.connected() && sink.connected(); }, 30s));
  CHECK(source.stats().connects >= 2);
  CHECK(sink.stats().connects >= 2);

  // Every job arrives (the two held ones again, redelivered), gets a confirmed status, and is acked.
  std::set<std::string> seen;
  auto settle = [&](AmqpDelivery& d) {
    core::JobResult status;
    status.job_id = d.job().id;
    status.success = true;
    status.redelivered = d.job().redelivered;
    REQUIRE_FALSE(publish_status(io, sink, status));
    seen.insert(d.job().id);
    source.ack(d);
  };
  REQUIRE(run_until(io, [&] { return pending->completed; }, 30s));
  REQUIRE_FALSE(pending->ec);
  settle(pending->delivery);
  while (seen.size() < 4) {
    Received r = receive(io, source, 30s);
    REQUIRE_FALSE(r.ec);
    settle(r.delivery);
  }
  CHECK(seen == std::set<std::string>{"r0", "r1", "r2", "r3"});
  REQUIRE(t::eventually([&] { return t::list_queues("messages_unacknowledged")[o.execute_queue] == 0; }));
  source.stop();
  sink.stop();
  t::Client reader;
  CHECK(reader.ready(o.execute_queue) == 0);
  CHECK(reader.ready(o.status_queue) >= 4);
}

// --- delivery under faults (issue 12) -----------------------------------------

TEST_CASE("amqp: a status no queue takes is not confirmed, and goes out once with its status id when the queue is back",
          "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("unroutable-status");
  LogLines log;
  log.attach(o);
  AmqpStatusSink sink(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return sink.connected(); }));
  t::Client admin;
  admin.delete_queue(o.status_queue);

  core::JobResult result;
  result.job_id = "lost-1";
  result.status_id = "lost-1.run-1";
  result.success = true;
  // The broker confirms an unroutable message too: only basic.return tells.
  CHECK(publish_status(io, sink, result) == core::errc::sink_unavailable);
  CHECK(publish_status(io, sink, result) == core::errc::sink_unavailable);
  CHECK(sink.stats().returned == 2);
  CHECK(sink.stats().confirmed == 0);
  CHECK(log.count("returned a status (312 NO_ROUTE)") == 1);  // once, not per retry
  CHECK_THAT(sink.last_error(), Catch::Contains(o.status_queue));

  admin.declare_queue(o.status_queue);
  REQUIRE_FALSE(publish_status(io, sink, result));
  t::Client reader;
  auto m = reader.get(o.status_queue);
  REQUIRE(m);
  CHECK(m->message_id == "lost-1.run-1");
  CHECK(m->body.find(R"("statusId":"lost-1.run-1")") != std::string::npos);
  auto back = blacktree::wire::parse_job_response(m->body);
  REQUIRE(back);
  CHECK(back->status_id == "lost-1.run-1");
  CHECK_FALSE(reader.get(o.status_queue, 300ms));  // the returned ones went nowhere
  CHECK(log.count("statuses reach a queue again") == 1);
  sink.stop();
}

TEST_CASE("amqp: with status.queue gone the job stays unacked until its status is routed", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("unroutable-dispatch");
  t::Client client;
  client.declare_queue(o.execute_queue);
  client.publish(o.execute_queue, job_json("held-1"));

  AmqpJobSource source(io.get_executor(), o);
  AmqpStatusSink sink(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return sink.connected() && source.connected(); }));
  client.delete_queue(o.status_queue);
  core::LoopbackTransport transport(io.get_executor());
  core::WorkerPool pool(io.get_executor());
  auto info = blacktree::test::make_worker("w1", 1);
  transport.add_endpoint(info.address, 1);
  REQUIRE(pool.register_worker(info));
  REQUIRE(pool.mark_alive("w1"));
  core::Dispatcher<AmqpJobSource, core::LoopbackTransport, AmqpStatusSink, core::WorkerPool> dispatcher(
      io.get_executor(), source, transport, sink, pool);
  dispatcher.start();
  // Retried, and never acked meanwhile.
  REQUIRE(run_until(io, [&] { return sink.stats().failed >= 2; }, 20s));
  CHECK(source.stats().acked == 0);
  CHECK(t::list_queues("messages_unacknowledged")[o.execute_queue] == 1);

  client.declare_queue(o.status_queue);
  REQUIRE(run_until(io, [&] { return source.stats().acked == 1; }, 30s));
  t::Client reader;
  auto m = reader.get(o.status_queue);
  REQUIRE(m);
  CHECK(blacktree::wire::parse_job_response(m->body)->job_id == "held-1");
  CHECK_FALSE(reader.get(o.status_queue, 300ms));
  dispatcher.async_stop(5s, [](std::error_code) {});
  run_until(io, [] { return false; }, 200ms);
  source.stop();
  sink.stop();
}

TEST_CASE("amqp: with the dead-letter queue gone the original stays unacked until the dead letter is routed",
          "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("unroutable-dead-letter");
  LogLines log;
  log.attach(o);
  t::Client client;
  client.declare_queue(o.execute_queue);
  client.publish(o.execute_queue, "{not json");
  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(1);
  Received bad = receive(io, source);
  REQUIRE_FALSE(bad.ec);
  REQUIRE_FALSE(bad.delivery.invalid_reason().empty());
  client.delete_queue(o.dead_letter_queue);
  source.reject(bad.delivery, core::Disposition::dead_letter, "the message is not JSON");
  // Returned, published again (with backoff), and the original is held, not acked nor requeued.
  REQUIRE(t::eventually([&] { return source.stats().dead_letters_returned >= 2; }));
  CHECK(source.stats().dead_lettered == 0);
  CHECK(source.stats().requeued == 0);
  CHECK(log.count("returned a dead letter") == 1);
  CHECK(t::list_queues("messages_unacknowledged")[o.execute_queue] == 1);

  client.declare_queue(o.dead_letter_queue);
  client.bind(o.dead_letter_queue, o.dead_letter_exchange, o.execute_queue);
  REQUIRE(t::eventually([&] { return source.stats().dead_lettered == 1; }));
  t::Client reader;
  auto m = reader.get(o.dead_letter_queue);
  REQUIRE(m);
  CHECK(m->body == "{not json");
  CHECK(m->headers["x-blacktree-reason"] == "the message is not JSON");
  CHECK_FALSE(reader.get(o.dead_letter_queue, 300ms));
  REQUIRE(t::eventually([&] { return t::list_queues("messages_unacknowledged")[o.execute_queue] == 0; }));
  CHECK(client.ready(o.execute_queue) == 0);
  source.stop();
}

TEST_CASE("amqp: the source consumes a quorum execute.queue, and a new prefetch takes effect", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("quorum");
  t::Client client;
  client.declare_quorum_queue(o.execute_queue);
  for (int i = 0; i < 3; ++i) client.publish(o.execute_queue, job_json("q" + std::to_string(i)));

  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(1);
  Received first = receive(io, source);
  INFO(source.last_error());
  REQUIRE_FALSE(first.ec);
  CHECK(first.delivery.job().id == "q0");
  CHECK(receive(io, source, 1000ms).ec == asio::error::operation_aborted);  // prefetch 1 holds
  source.set_prefetch(2);
  Received second = receive(io, source);
  REQUIRE_FALSE(second.ec);
  CHECK(receive(io, source, 1000ms).ec == asio::error::operation_aborted);  // 2 held: no third
  source.ack(first.delivery);
  Received third = receive(io, source);
  REQUIRE_FALSE(third.ec);
  source.ack(second.delivery);
  source.ack(third.delivery);
  REQUIRE(t::eventually([&] { return source.stats().acked == 3; }));
  CHECK(source.stats().connects == 1);
  source.stop();
  CHECK(client.ready(o.execute_queue) == 0);
}

TEST_CASE("amqp: a new prefetch never cancels at once a consumer that holds deliveries", "[amqp]") {
  // RabbitMQ 3.10 can lose a quorum queue's deliveries held by a cancelled
  // consumer at a restart (operations.md, "Known broker issue"); the
  // dispatcher's prefetch moves with every duplicate it holds.
  asio::io_context io;
  AmqpOptions o = test_options("consumers");
  o.consumer_shrink_delay = 300ms;
  t::Client client;
  client.declare_quorum_queue(o.execute_queue);
  for (int i = 0; i < 8; ++i) client.publish(o.execute_queue, job_json("c" + std::to_string(i)));
  auto consumers = [&] { return t::consumers_of(o.execute_queue); };

  AmqpJobSource source(io.get_executor(), o);
  std::vector<AmqpDelivery> held;
  auto take = [&](int n) {
    for (int i = 0; i < n; ++i) {
      Received r = receive(io, source);
      REQUIRE_FALSE(r.ec);
      held.push_back(std::move(r.delivery));
    }
  };
  source.set_prefetch(2);
  take(2);
  CHECK(t::eventually([&] { return consumers() == 1; }));
  // Higher: a second consumer for the difference, the first one kept.
  source.set_prefetch(3);
  take(1);
  CHECK(t::eventually([&] { return consumers() == 2; }));
  source.set_prefetch(5);
  take(2);
  CHECK(t::eventually([&] { return consumers() == 3; }));
  CHECK(receive(io, source, 500ms).ec == asio::error::operation_aborted);  // 5 held: no sixth

  // Lower, every consumer holding deliveries: kept for the shrink delay, then
  // cancelled, fewest held first, until no more than 1 can come. What they
  // hold counts until it settles: no consumer while 5 are held.
  source.set_prefetch(1);
  REQUIRE(t::eventually([&] { return consumers() == 0; }));
  CHECK(receive(io, source, 500ms).ec == asio::error::operation_aborted);
  for (std::size_t i = 0; i < 4; ++i) source.ack(held[i]);
  CHECK(receive(io, source, 500ms).ec == asio::error::operation_aborted);  // one still held
  source.ack(held[4]);
  take(1);
  REQUIRE(t::eventually([&] { return consumers() == 1; }));
  CHECK(held.back().job().id == "c5");
  CHECK(receive(io, source, 500ms).ec == asio::error::operation_aborted);  // prefetch 1 holds

  source.ack(held.back());
  REQUIRE(t::eventually([&] { return source.stats().acked == 6; }));
  source.set_prefetch(0);
  REQUIRE(t::eventually([&] { return consumers() == 0; }));
  source.stop();
  CHECK(client.ready(o.execute_queue) == 2);
}

TEST_CASE("amqp: with queue_type quorum the adapters declare quorum queues", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("declare-quorum");
  o.queue_type = "quorum";
  LogLines log;
  log.attach(o);
  AmqpJobSource source(io.get_executor(), o);
  AmqpStatusSink sink(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return source.connected() && sink.connected(); }));
  INFO(source.last_error() << " / " << sink.last_error());
  const auto types = t::list_queues_text("type");
  CHECK(types.at(o.execute_queue) == "quorum");
  CHECK(types.at(o.dead_letter_queue) == "quorum");
  CHECK(types.at(o.status_queue) == "quorum");
  CHECK(log.count("used as it is") == 0);
  // Jobs go through a quorum queue as through a classic one.
  t::Client client;
  client.publish(o.execute_queue, job_json("qq-1"));
  source.set_prefetch(2);
  Received r = receive(io, source);
  REQUIRE_FALSE(r.ec);
  CHECK(r.delivery.job().id == "qq-1");
  source.ack(r.delivery);
  REQUIRE(t::eventually([&] { return source.stats().acked == 1; }));
  source.stop();
  sink.stop();

  // A classic queue of that name is used as it is, and the log says so.
  AmqpOptions classic = test_options("declare-quorum-classic");
  client.declare_queue(classic.execute_queue);
  classic.queue_type = "quorum";
  LogLines classic_log;
  classic_log.attach(classic);
  AmqpJobSource on_classic(io.get_executor(), classic);
  REQUIRE(t::eventually([&] { return on_classic.connected(); }));
  CHECK(t::list_queues_text("type").at(classic.execute_queue) == "classic");
  CHECK(classic_log.count("queue '" + classic.execute_queue + "' exists on amqp://127.0.0.1:" +
                          std::to_string(t::broker_port()) + "/ as another type than quorum") == 1);
  on_classic.stop();

  // Anything but classic or quorum is refused by the constructors.
  AmqpOptions bad = test_options("declare-bad-type");
  bad.queue_type = "Quorum";
  CHECK_THROWS_WITH(AmqpJobSource(io.get_executor(), bad), "queue_type 'Quorum': it must be classic or quorum");
  CHECK_THROWS_WITH(AmqpStatusSink(io.get_executor(), bad), "queue_type 'Quorum': it must be classic or quorum");
  CHECK_THROWS_WITH(AmqpEventPublisher(bad), "queue_type 'Quorum': it must be classic or quorum");
}

TEST_CASE("amqp: the adapters connect to the next node of the list and name the one they are on", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("several");
  const std::string live = "amqp://127.0.0.1:" + std::to_string(t::broker_port()) + "/";
  o.url = "amqp://guest:secretpw@127.0.0.1:1/, " + t::broker_url();  // nothing listens on port 1
  LogLines log;
  log.attach(o);
  AmqpJobSource source(io.get_executor(), o);
  AmqpStatusSink sink(io.get_executor(), o);
  AmqpEventPublisher events(o);
  REQUIRE(t::eventually([&] { return source.connected() && sink.connected() && events.connected(); }));
  CHECK(source.endpoint() == live);
  CHECK(sink.endpoint() == live);
  CHECK(events.endpoint() == live);
  CHECK(log.count("amqp source: connected again to " + live) == 1);
  CHECK(log.count("amqp status: connected again to " + live) == 1);
  CHECK(log.count("secretpw") == 0);
  source.stop();
  sink.stop();
  events.stop();
  CHECK(source.endpoint() == "amqp://127.0.0.1:1/," + live);
}

TEST_CASE("amqp: after a consume failure the source reconnects with backoff", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("consume-backoff");
  o.declare = false;  // execute.queue does not exist: every basic.consume fails
  o.reconnect_initial = 50ms;
  o.reconnect_max = 400ms;
  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(1);
  REQUIRE(t::eventually([&] { return !source.last_error().empty(); }));
  INFO(source.last_error());
  CHECK(source.last_error().find(o.execute_queue) != std::string::npos);
  // Measures a rate: the window is what is under test, not a wait for a condition.
  const auto before = source.stats().connects;
  std::this_thread::sleep_for(1500ms);
  const auto during = source.stats().connects - before;
  CHECK(during <= 8);  // with backoff about 4; a tight loop makes it over a hundred
  source.stop();
}

TEST_CASE("amqp: a message over the size limit is dead-lettered unread, with the reason", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("oversized");
  t::Client client;
  client.declare_queue(o.execute_queue);
  client.publish(o.execute_queue, job_json("huge", R"(,"payload":")" + std::string(3u << 20, 'x') + "\""));
  client.publish(o.execute_queue, job_json("small"));
  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(2);
  Received huge = receive(io, source);
  REQUIRE_FALSE(huge.ec);
  const std::string reason(huge.delivery.invalid_reason());
  INFO(reason);
  CHECK(reason.find("1048576") != std::string::npos);
  CHECK(huge.delivery.body().empty());  // never buffered
  CHECK(huge.delivery.job().id.empty());
  CHECK(source.stats().too_large == 1);
  Received small = receive(io, source);
  REQUIRE_FALSE(small.ec);
  CHECK(small.delivery.invalid_reason().empty());
  CHECK(small.delivery.job().id == "small");
  source.reject(huge.delivery, core::Disposition::dead_letter, reason);
  source.ack(small.delivery);
  REQUIRE(t::eventually([&] { return source.stats().dead_lettered == 1; }));
  t::Client reader;
  auto m = reader.get(o.dead_letter_queue);
  REQUIRE(m);
  CHECK(m->headers["x-blacktree-reason"] == reason);
  source.stop();
}

TEST_CASE("amqp: a jobId that breaks the rule is refused at parse, without echoing it", "[amqp]") {
  asio::io_context io;
  AmqpOptions o = test_options("job-id-rule");
  t::Client client;
  client.declare_queue(o.execute_queue);
  const std::string long_id(300, 'a');
  client.publish(o.execute_queue, job_json(long_id));
  client.publish(o.execute_queue, R"({'jobId':'single','repoUrl':'r','branch':'b','imageName':'i'})");
  AmqpJobSource source(io.get_executor(), o);
  source.set_prefetch(2);
  Received too_long = receive(io, source);
  REQUIRE_FALSE(too_long.ec);
  const std::string reason(too_long.delivery.invalid_reason());
  INFO(reason);
  CHECK(reason.find("jobId") != std::string::npos);
  CHECK(reason.find("aaaaaaaa") == std::string::npos);
  CHECK(too_long.delivery.job().id.empty());
  Received quoted = receive(io, source);
  REQUIRE_FALSE(quoted.ec);
  CHECK_FALSE(quoted.delivery.invalid_reason().empty());
  source.stop();
}

TEST_CASE("amqp: an event whose jobId is too long for a routing key does not break the connection", "[amqp]") {
  AmqpOptions o = test_options("events-long-id");
  AmqpEventPublisher publisher(o);
  REQUIRE(t::eventually([&] { return publisher.connected(); }));
  t::Client reader;
  const std::string queue = tap_events(reader, o);
  CHECK(publisher.publish(core::ProgressEvent{std::string(300, 'z'), "w1", core::Phase::running, "building", "x"}));
  CHECK(publisher.publish(core::ProgressEvent{"short-1", "w1", core::Phase::running, "building", "y"}));
  auto m = reader.get(queue);
  REQUIRE(m);
  CHECK(m->routing_key == "job.short-1");
  CHECK(publisher.stats().connects == 1);
  CHECK(publisher.stats().dropped == 1);
  publisher.stop();
}

TEST_CASE("amqp: stop returns within its deadline while the broker blocks publishers", "[amqp][serial]") {
  asio::io_context io;
  AmqpOptions o = test_options("memory-alarm");
  o.connect_timeout = 1s;
  o.heartbeat = 30s;  // the default: a blocked connection is not ended by missed heartbeats for a minute
  AmqpStatusSink sink(io.get_executor(), o);
  REQUIRE(t::eventually([&] { return sink.connected(); }));
  struct Restore {
    ~Restore() { t::run_script("ctl", "set_vm_memory_high_watermark 0.4"); }
  } restore;
  REQUIRE(t::run_script("ctl", "set_vm_memory_high_watermark 0") == 0);
  REQUIRE(t::eventually([] {
    std::string alarms;
    return t::run_script("ctl", "eval 'rabbit_alarm:get_alarms().'", &alarms) == 0 &&
           alarms.find("memory") != std::string::npos;
  }));
  core::JobResult big;
  big.job_id = "blocked";
  big.logs = std::string(1u << 20, 'l');
  int completed = 0;
  for (int i = 0; i < 48; ++i) sink.async_publish(big, [&](std::error_code) { ++completed; });
  // The sink's thread writes until the socket is full; the broker reads nothing more.
  REQUIRE(t::eventually([&] { return sink.stats().published >= 1; }));
  const auto start = std::chrono::steady_clock::now();
  std::atomic<bool> stopped{false};
  std::thread stopper([&] {
    sink.stop();
    stopped = true;
  });
  const bool in_time = t::eventually([&] { return stopped.load(); }, 10s);
  CHECK(in_time);
  stopper.join();
  INFO("stop took " << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count()
                     << " ms");
  run_until(io, [&] { return completed == 48; }, 5s);
  CHECK(completed == 48);  // every publish completed (as failed): none left waiting
}
