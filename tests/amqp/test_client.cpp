// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree::amqp's error category, resolve_endpoint's errors and the
// blocking AmqpClient, against the fixture's RabbitMQ.

#include <blacktree/amqp/client.hpp>

#include "amqp_test_support.hpp"

#include <blacktree/amqp/error.hpp>
#include <blacktree/amqp/options.hpp>

#include <chrono>
#include <string>

namespace {

using namespace std::chrono_literals;
using blacktree::amqp::AmqpClient;
using blacktree::amqp::AmqpOptions;
namespace amqp = blacktree::amqp;
namespace t = blacktree::amqp::test;

AmqpOptions client_options() {
  AmqpOptions o;
  o.url = t::broker_url();
  o.connect_timeout = 10s;
  return o;
}

}  // namespace

TEST_CASE("amqp: errc has its own category, with a message for every code", "[amqp]") {
  const std::error_code ec = amqp::errc::unroutable;
  CHECK(ec.category() == amqp::error_category());
  CHECK(std::string(ec.category().name()) == "blacktree.amqp");
  CHECK(ec.message() == "no queue took the message");
  CHECK(ec != std::error_code(static_cast<int>(amqp::errc::unroutable), std::generic_category()));
  for (int e = static_cast<int>(amqp::errc::invalid_url); e <= static_cast<int>(amqp::errc::timed_out); ++e)
    CHECK(amqp::make_error_code(static_cast<amqp::errc>(e)).message().find("unknown") == std::string::npos);
}

TEST_CASE("amqp: resolve_endpoint fails with invalid_url and never shows the password", "[amqp]") {
  AmqpOptions o;
  o.url = "http://user:hunter2@host/";
  auto endpoint = amqp::resolve_endpoint(o);
  REQUIRE_FALSE(endpoint);
  CHECK(endpoint.error().code() == amqp::errc::invalid_url);
  CHECK(endpoint.error().message().find("hunter2") == std::string::npos);

  o.url = "amqps://u:hunter2@host:5671/";
  o.tls.cert_file = "client.pem";
  endpoint = amqp::resolve_endpoint(o);
  REQUIRE_FALSE(endpoint);
  CHECK(endpoint.error().code() == amqp::errc::invalid_url);
  CHECK(endpoint.error().message().find("key_file") != std::string::npos);
}

TEST_CASE("amqp: AmqpClient says why it cannot connect or log in", "[amqp]") {
  AmqpClient client;
  AmqpOptions o = client_options();
  o.url = "not-a-url";
  auto opened = client.open(o, "test");
  REQUIRE_FALSE(opened);
  CHECK(opened.error().code() == amqp::errc::invalid_url);

  o.url = "amqp://guest:secretpw@127.0.0.1:1/";  // nothing listens on port 1
  opened = client.open(o, "test");
  REQUIRE_FALSE(opened);
  CHECK(opened.error().code() == amqp::errc::connect_failed);
  CHECK(opened.error().message().find("cannot connect to amqp://127.0.0.1:1/: connection refused") !=
        std::string::npos);
  CHECK(opened.error().message().find("secretpw") == std::string::npos);

  o.url = "amqp://guest:not-the-password@127.0.0.1:" + std::to_string(t::broker_port()) + "/";
  opened = client.open(o, "test");
  REQUIRE_FALSE(opened);
  INFO(opened.error().message());
  CHECK(opened.error().code() == amqp::errc::login_failed);
  CHECK(opened.error().message().find("as 'guest'") != std::string::npos);
  CHECK(opened.error().message().find("not-the-password") == std::string::npos);
}

TEST_CASE("amqp: AmqpClient publishes confirmed, and a message no queue takes is unroutable", "[amqp]") {
  const std::string queue = t::unique_name("client") + ".execute";
  t::Client control;
  control.declare_queue(queue);

  AmqpClient client;
  auto opened = client.open(client_options(), "test");
  INFO((opened ? "" : opened.error().message()));
  REQUIRE(opened);
  CHECK(client.where() == "amqp://127.0.0.1:" + std::to_string(t::broker_port()) + "/");

  auto sent = client.publish_confirmed("", queue, R"({"jobId":"c-1"})", 10s);
  INFO((sent ? "" : sent.error().message()));
  REQUIRE(sent);
  auto taken = control.get(queue);
  REQUIRE(taken);
  CHECK(taken->body == R"({"jobId":"c-1"})");
  CHECK(taken->delivery_mode == 2);
  CHECK(taken->content_type == "application/json");

  sent = client.publish_confirmed("", queue + ".missing", "{}", 10s);
  REQUIRE_FALSE(sent);
  CHECK(sent.error().code() == amqp::errc::unroutable);
  CHECK(sent.error().message().find("queue '" + queue + ".missing' does not exist") != std::string::npos);
  client.close();
}

TEST_CASE("amqp: AmqpClient subscribes to a topic exchange and receives what is routed to it", "[amqp]") {
  const std::string exchange = t::unique_name("client") + ".events";
  AmqpClient client;
  REQUIRE(client.open(client_options(), "test"));
  auto queue = client.subscribe(exchange, "job.c-2");
  INFO((queue ? "" : queue.error().message()));
  REQUIRE(queue);
  CHECK_FALSE(queue->empty());
  REQUIRE(client.consume(*queue));

  auto nothing = client.next(50ms);
  REQUIRE(nothing);
  CHECK_FALSE(*nothing);

  t::Client control;
  control.publish("job.other", R"({"jobId":"other"})", exchange);  // not bound: never arrives
  control.publish("job.c-2", R"({"jobId":"c-2"})", exchange);
  auto received = client.next(10s);
  REQUIRE(received);
  REQUIRE(*received);
  CHECK(**received == R"({"jobId":"c-2"})");

  client.close();
}
