// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// A blocking AMQP client for short-lived programs (the `blacktree` CLI): one
// connection, one channel in confirm mode, calls that wait for the broker.
// It opens its connection exactly as the adapters do (URL, TLS, login,
// heartbeats, the next of several broker addresses in turn); unlike them it
// has no thread and does not reconnect by itself, so it is no fit for a
// long-lived service.
//
//   blacktree::amqp::AmqpClient client;
//   if (auto opened = client.open(options, "tool"); !opened) return fail(opened.error());
//   if (auto sent = client.publish_confirmed("", "execute.queue", body, 10s); !sent) ...
//
// Every failure is a core::Error with an amqp::errc and a message that names
// the broker without its password.

#include <blacktree/amqp/error.hpp>
#include <blacktree/amqp/options.hpp>
#include <blacktree/core/result.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace blacktree::amqp {

namespace detail {
class Connection;
class Brokers;
}

class AmqpClient {
 public:
  AmqpClient();
  ~AmqpClient();
  AmqpClient(const AmqpClient&) = delete;
  AmqpClient& operator=(const AmqpClient&) = delete;

  /// Connects to `options.url` (TLS for amqps, with `options.tls`), logs in
  /// as "<connection_name> <role>" and opens channel 1 with publisher
  /// confirms. `options.connect_timeout` bounds the connect, the handshake
  /// and each synchronous request. With several addresses (a cluster), the
  /// attempts go to them in turn, as the adapters' do: the first address on
  /// this client's first call, then always the next one, each at most once
  /// per call and at most `max_addresses` of them, until one accepts; so
  /// calling open() again after a failure, or after the connection broke,
  /// moves on to the next node. Errors: invalid_url, tls_setup_failed,
  /// connect_failed, login_failed, channel_closed; when several addresses
  /// failed, the message names each with its reason.
  core::Result<void> open(const AmqpOptions& options, std::string_view role,
                          std::size_t max_addresses = static_cast<std::size_t>(-1));

  /// Declares `exchange` (topic, durable, not auto-delete: as the event
  /// publisher does, so whichever comes first, the other's declare agrees)
  /// and an exclusive, auto-delete, server-named queue bound to it with
  /// `routing_key`. Returns the queue's name. Errors: declare_failed.
  core::Result<std::string> subscribe(const std::string& exchange, const std::string& routing_key);

  /// Publishes `body` persistent, application/json, mandatory, and waits up
  /// to `timeout` for the broker's confirm. `priority`, when given, is the
  /// message's AMQP priority property (a queue declared with x-max-priority
  /// delivers higher ones first). A message no queue takes (the broker
  /// returns it) fails with unroutable: it would otherwise be confirmed and
  /// lost. Other errors: publish_failed, publish_nacked, timed_out and
  /// connection_lost (the message may or may not be queued), channel_closed.
  core::Result<void> publish_confirmed(const std::string& exchange, const std::string& routing_key,
                                       std::string_view body, std::chrono::milliseconds timeout,
                                       std::optional<std::uint8_t> priority = std::nullopt);

  struct QueueCounts {
    std::uint32_t messages = 0;   ///< ready for delivery (not those delivered and unacked)
    std::uint32_t consumers = 0;
  };
  /// The broker's counts for `queue`, by a passive declare (the queue is not
  /// created). Errors: declare_failed (a missing queue also closes the
  /// channel: open() again to go on).
  core::Result<QueueCounts> queue_counts(const std::string& queue);

  /// Starts consuming `queue` (auto-ack: meant for a queue of our own, as
  /// subscribe() declares). Errors: consume_failed.
  core::Result<void> consume(const std::string& queue);

  /// Waits up to `timeout` for the next delivery on the consumed queue: its
  /// body, or nullopt when none came in time (call again). Errors:
  /// connection_lost, channel_closed, consume_failed (the broker cancelled
  /// the consumer).
  core::Result<std::optional<std::string>> next(std::chrono::milliseconds timeout);

  /// Polite close; the broker then deletes the exclusive queue.
  void close() noexcept;

  /// "amqp://host:port/vhost" without credentials: the node of the last
  /// open() attempt; empty before open().
  const std::string& where() const noexcept;

 private:
  core::Result<void> open_at(const AmqpEndpoint& endpoint, const AmqpOptions& options, std::string_view role);

  std::unique_ptr<detail::Connection> conn_;
  std::unique_ptr<detail::Brokers> brokers_;  // options.url's addresses, resolved by the first open()
  std::string url_;                          // ... from this url (another url resolves them anew)
};

}  // namespace blacktree::amqp
