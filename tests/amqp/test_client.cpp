// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree::amqp's error category, resolve_endpoint's errors and the
// blocking AmqpClient, against the fixture's RabbitMQ.

#include <blacktree/amqp/client.hpp>

#include "amqp/connection.hpp"
#include "amqp_test_support.hpp"

#include <blacktree/amqp/error.hpp>
#include <blacktree/amqp/options.hpp>

#include <chrono>
#include <string>
#include <vector>

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
  for (int e = static_cast<int>(amqp::errc::invalid_url); e <= static_cast<int>(amqp::errc::invalid_option); ++e)
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

TEST_CASE("amqp: MQ_URL takes a comma-separated list of broker addresses, one per node", "[amqp]") {
  AmqpOptions o;
  o.url = "amqp://u:hunter2@10.0.0.1:5672/, amqp://u:hunter2@10.0.0.2:5673/prod ,amqps://v:pw@node3/";
  auto endpoints = amqp::resolve_endpoints(o);
  INFO((endpoints ? "" : endpoints.error().message()));
  REQUIRE(endpoints);
  REQUIRE(endpoints->size() == 3);
  CHECK((*endpoints)[0].host == "10.0.0.1");
  CHECK((*endpoints)[0].port == 5672);
  CHECK((*endpoints)[0].vhost == "/");
  CHECK((*endpoints)[1].host == "10.0.0.2");
  CHECK((*endpoints)[1].port == 5673);
  CHECK((*endpoints)[1].vhost == "prod");
  CHECK((*endpoints)[1].password.reveal() == "hunter2");
  CHECK((*endpoints)[2].tls);
  CHECK((*endpoints)[2].port == 5671);
  CHECK((*endpoints)[2].username == "v");
  CHECK(amqp::describe(*endpoints) == "amqp://10.0.0.1:5672/,amqp://10.0.0.2:5673/prod,amqps://node3:5671/");
  // resolve_endpoint: the first address.
  auto first = amqp::resolve_endpoint(o);
  REQUIRE(first);
  CHECK(first->describe() == "amqp://10.0.0.1:5672/");

  // The overrides apply to every address.
  o.username = "other";
  o.password = blacktree::core::Secret("from-a-file");
  endpoints = amqp::resolve_endpoints(o);
  REQUIRE(endpoints);
  for (const auto& e : *endpoints) {
    CHECK(e.username == "other");
    CHECK(e.password.reveal() == "from-a-file");
  }

  // One address is a list of one.
  o.url = "amqp://guest:guest@127.0.0.1:5672/";
  endpoints = amqp::resolve_endpoints(o);
  REQUIRE(endpoints);
  CHECK(endpoints->size() == 1);
}

TEST_CASE("amqp: a bad address in the list is named by its position, never with its password", "[amqp]") {
  struct Case {
    std::string url, expected;
  };
  const std::vector<Case> cases = {
      {"amqp://u:hunter2@a:5672/,amqp://u:hunter2@b:0/",
       "invalid MQ_URL, address 2 of 2 (amqp://...@b:0/): the port must be 1 to 65535"},
      {"amqp://u:hunter2@a:5672/,,amqp://u:hunter2@c/",
       "invalid MQ_URL, address 2 of 3 is empty: separate the nodes' URLs with single commas"},
      {"amqp://u:hunter2@a:5672/,", "invalid MQ_URL, address 2 of 2 is empty"},
      {"http://u:hunter2@a/,amqp://u:hunter2@b/",
       "invalid MQ_URL, address 1 of 2 (http://...@a/): it must start with amqp:// or amqps://"},
      {"amqp://u:hunter2@a/,amqp://u:hunter2@b:notaport/",
       "invalid MQ_URL, address 2 of 2 (amqp://...@b:notaport/): expected amqp[s]://user:password@host:port/vhost"},
      // A password with a stray '/' (it should be %2F) is hidden too.
      {"amqp://u:hun/ter2@a:x/", "invalid MQ_URL (amqp://...@a:x/): expected amqp[s]://"},
      {"", "invalid MQ_URL: it is empty"},
  };
  for (const auto& c : cases) {
    AmqpOptions o;
    o.url = c.url;
    auto endpoints = amqp::resolve_endpoints(o);
    INFO(c.url);
    REQUIRE_FALSE(endpoints);
    INFO(endpoints.error().message());
    CHECK(endpoints.error().code() == amqp::errc::invalid_url);
    CHECK(endpoints.error().message().find(c.expected) != std::string::npos);
    CHECK(endpoints.error().message().find("hunter2") == std::string::npos);
    CHECK(endpoints.error().message().find("hun/ter2") == std::string::npos);
    CHECK(endpoints.error().message().find("ter2") == std::string::npos);
    // resolve_endpoint checks every address, not only the first.
    CHECK_FALSE(amqp::resolve_endpoint(o));
  }
}

TEST_CASE("amqp: queue_type is classic or quorum", "[amqp]") {
  AmqpOptions o;
  CHECK(o.queue_type == "classic");
  CHECK(amqp::check_options(o));
  o.queue_type = "quorum";
  CHECK(amqp::check_options(o));
  o.queue_type = "stream";
  auto checked = amqp::check_options(o);
  REQUIRE_FALSE(checked);
  CHECK(checked.error().code() == amqp::errc::invalid_option);
  CHECK(checked.error().message() == "queue_type 'stream': it must be classic or quorum");
}

TEST_CASE("amqp: connections take the broker addresses in turn", "[amqp]") {
  AmqpOptions o;
  o.url = "amqp://a:1/,amqp://b:2/,amqp://c:3/";
  auto brokers = amqp::detail::resolve_brokers(o);
  REQUIRE(brokers);
  std::vector<std::string> order;
  for (int i = 0; i < 7; ++i) order.push_back(brokers->next().host);
  CHECK(order == std::vector<std::string>{"a", "b", "c", "a", "b", "c", "a"});
}

TEST_CASE("amqp: AmqpClient goes on to the next node when one cannot be reached", "[amqp]") {
  AmqpOptions o = client_options();
  const std::string live = "amqp://127.0.0.1:" + std::to_string(t::broker_port()) + "/";
  o.url = "amqp://guest:secretpw@127.0.0.1:1/," + t::broker_url();  // nothing listens on port 1
  AmqpClient client;
  auto opened = client.open(o, "test");
  INFO((opened ? "" : opened.error().message()));
  REQUIRE(opened);
  CHECK(client.where() == live);
  // Opened again (after the connection broke, say): the next address in
  // turn, the dead one, then on to the live one.
  opened = client.open(o, "test");
  REQUIRE(opened);
  CHECK(client.where() == live);
  // At most one address per call, when asked: the dead one fails alone.
  opened = client.open(o, "test", 1);
  REQUIRE_FALSE(opened);
  CHECK(opened.error().message().find("cannot connect to amqp://127.0.0.1:1/") == 0);
  opened = client.open(o, "test", 1);
  CHECK(opened);
  client.close();

  // None reachable: each named with its reason, no password.
  o.url = "amqp://guest:secretpw@127.0.0.1:1/,amqp://guest:secretpw@127.0.0.1:2/";
  AmqpClient none;
  opened = none.open(o, "test");
  REQUIRE_FALSE(opened);
  INFO(opened.error().message());
  CHECK(opened.error().code() == amqp::errc::connect_failed);
  CHECK(opened.error().message().find("no broker node could be used (2 tried): cannot connect to "
                                      "amqp://127.0.0.1:1/: connection refused; cannot connect to "
                                      "amqp://127.0.0.1:2/: connection refused") == 0);
  CHECK(opened.error().message().find("secretpw") == std::string::npos);

  // A refused login says more than a node that is down: its code wins.
  o.url = "amqp://guest:secretpw@127.0.0.1:1/,amqp://guest:wrong@127.0.0.1:" + std::to_string(t::broker_port()) + "/";
  AmqpClient refused;
  opened = refused.open(o, "test");
  REQUIRE_FALSE(opened);
  CHECK(opened.error().code() == amqp::errc::login_failed);
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
