// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Private to src/amqp: a rabbitmq-c connection owned by one thread, and the
// poll() that waits on its socket and a waker. Both the connection loop of
// the adapters (connection_loop.hpp) and the blocking AmqpClient open their
// connections here. Nothing here throws; failures come back as core::Error
// with an amqp::errc and a message a person can act on.

#include <blacktree/amqp/error.hpp>
#include <blacktree/amqp/options.hpp>
#include <blacktree/core/result.hpp>

#include "common/waker.hpp"

#include <amqp.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::amqp::detail {

using blacktree::detail::Waker;

/// Text for a failed rabbitmq-c call ("" when `reply` is normal).
std::string describe_reply(const amqp_rpc_reply_t& reply);
/// Success when `reply` is normal, else `code` with "context: what the broker or rabbitmq-c said".
core::Result<void> check_reply(const amqp_rpc_reply_t& reply, errc code, std::string_view context);

inline std::string_view to_view(amqp_bytes_t bytes) {
  return {static_cast<const char*>(bytes.bytes), bytes.len};
}
inline amqp_bytes_t to_bytes(std::string_view s) {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}
timeval to_timeval(std::chrono::milliseconds ms);

struct PollResult {
  bool socket_ready = false;  ///< readable, or an error/hang-up to be read
  bool woken = false;
};
/// Waits until `socket_fd` (ignored when < 0) is readable, the waker fires or
/// `timeout` passes (negative: no timeout).
PollResult wait(int socket_fd, const Waker& waker, std::chrono::milliseconds timeout) noexcept;

/// One connection; only its owning thread touches it.
class Connection {
 public:
  Connection() = default;
  ~Connection() { abandon(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// Connects (TLS for amqps), logs in as "<connection_name> <role>" and
  /// opens channel 1. Errors: tls_setup_failed, connect_failed, login_failed,
  /// channel_closed.
  core::Result<void> open(const AmqpEndpoint& endpoint, const AmqpOptions& options, std::string_view role);
  bool is_open() const noexcept { return state_ != nullptr; }
  amqp_connection_state_t get() const noexcept { return state_; }
  int fd() const noexcept;
  /// The broker, as messages name it: "amqp://host:5672/" (no credentials).
  const std::string& where() const noexcept { return where_; }
  /// rabbitmq-c holds frames or bytes it has not handed out yet: read them
  /// before waiting on the socket, which will not signal them.
  bool has_buffered() const noexcept;

  /// Opens channel `ch` (> 1; 1 is opened by open()).
  core::Result<void> open_channel(amqp_channel_t ch);
  /// Declares a durable queue of `type` ("classic": no arguments; "quorum":
  /// `x-queue-type: quorum`); one that exists with other arguments is used
  /// as it is. When `type` is quorum and the broker says the queue exists as
  /// another type, `note` (if given) gets a sentence saying so, to be logged.
  core::Result<void> declare_queue(amqp_channel_t ch, const std::string& name, std::string_view type = "classic",
                                   std::string* note = nullptr);
  core::Result<void> declare_exchange(amqp_channel_t ch, const std::string& name, const std::string& type);
  core::Result<void> bind_queue(amqp_channel_t ch, const std::string& queue, const std::string& exchange,
                                const std::string& key);
  core::Result<void> confirm_select(amqp_channel_t ch);

  /// errc::connection_lost, "lost the connection to <where>: <detail>".
  core::Error lost(std::string_view detail) const;
  /// The same, for a rabbitmq-c status code.
  core::Error lost(int status) const;

  /// Polite close (bounded by the RPC timeout), then frees everything.
  void close() noexcept;
  /// The polite part alone: connection.close, waiting for close-ok.
  void send_close() noexcept;
  /// Frees everything without a word to the broker (after an error).
  void abandon() noexcept;

  /// Heartbeat bookkeeping: rabbitmq-c only notices a silent broker while it
  /// blocks in a read, which the connection loop never does, so the loop tracks it.
  void note_received() noexcept { last_received_ = std::chrono::steady_clock::now(); }
  /// True when the broker has said nothing for more than two heartbeat intervals.
  bool heartbeat_expired() const noexcept;
  /// How long the owner may wait in poll() and still send heartbeats in time.
  std::chrono::milliseconds poll_timeout() const noexcept;

 private:
  core::Result<void> reopen_after_channel_error(amqp_channel_t ch);

  amqp_connection_state_t state_ = nullptr;
  std::string where_;
  std::chrono::seconds heartbeat_{0};
  std::chrono::steady_clock::time_point last_received_{};
};

/// While it lives, what the owner sends on `conn` waits in the kernel
/// (TCP_CORK) and leaves as one stream of full segments when it ends. For a
/// run of publishes or acks: rabbitmq-c hands each frame to send() on its
/// own and pushes every message out, so each one costs a segment, a loopback
/// delivery or a NIC packet here and a read at the broker. Only around sends
/// that wait for no reply (a corked RPC would wait for Linux's 200 ms cork
/// limit), and nothing slow between them: they wait until the guard ends.
/// `count`: the messages the run means to send; for fewer than 2, or when
/// the socket is gone, it does nothing.
class CorkedSends {
 public:
  CorkedSends(const Connection& conn, std::size_t count) noexcept;
  ~CorkedSends();
  CorkedSends(const CorkedSends&) = delete;
  CorkedSends& operator=(const CorkedSends&) = delete;

 private:
  int fd_ = -1;
};

/// The broker addresses of one connection, taken in turn. The one place
/// that picks where a connection goes: the adapters' connection loops and
/// the blocking AmqpClient (the CLI, the orchestrator's queue-depth reader)
/// all ask it. Used by one thread at a time.
class Brokers {
 public:
  /// Throws std::invalid_argument when `endpoints` is empty.
  explicit Brokers(std::vector<AmqpEndpoint> endpoints);
  /// Where the next connection attempt goes: the first address on the first
  /// call, then each call moves on to the next one, wrapping around. So a
  /// failed attempt, or a connection that was lost, is followed by one to the
  /// next node.
  const AmqpEndpoint& next() noexcept;
  std::size_t size() const noexcept { return endpoints_.size(); }
  const std::vector<AmqpEndpoint>& all() const noexcept { return endpoints_; }

 private:
  std::vector<AmqpEndpoint> endpoints_;
  std::size_t next_ = 0;
};

/// resolve_endpoints(), as Brokers.
core::Result<Brokers> resolve_brokers(const AmqpOptions& options);

/// Success unless `frame` is the broker closing a channel (channel_closed) or
/// the connection (connection_lost, answered with close-ok).
core::Result<void> closed_by_broker(Connection& conn, const amqp_frame_t& frame);

/// Reads the frames that have arrived, without blocking, handing each to
/// `on_frame(frame)` (which returns a core::Result<void>): methods, and the
/// content header and body frames that follow a basic.return or a delivery.
/// Fails when the connection is unusable, the broker closed a channel, or
/// `on_frame` fails.
template <class OnFrame>
core::Result<void> read_frames(Connection& conn, OnFrame&& on_frame) {
  for (int i = 0; i < 256; ++i) {  // bounded, so the owner's commands get their turn
    amqp_maybe_release_buffers(conn.get());
    timeval zero{0, 0};
    amqp_frame_t frame{};
    const int rc = amqp_simple_wait_frame_noblock(conn.get(), &frame, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) return {};
    if (rc != AMQP_STATUS_OK) return conn.lost(rc);
    if (auto closed = closed_by_broker(conn, frame); !closed) return closed;
    if (auto handled = on_frame(frame); !handled) return handled;
  }
  return {};
}

/// read_frames for the methods alone.
template <class OnMethod>
core::Result<void> read_methods(Connection& conn, OnMethod&& on_method) {
  return read_frames(conn, [&](const amqp_frame_t& frame) {
    return frame.frame_type == AMQP_FRAME_METHOD ? on_method(frame) : core::Result<void>();
  });
}

/// Backoff between reconnects.
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max) : initial_(initial), max_(max) {}
  std::chrono::milliseconds next() noexcept;
  void reset() noexcept { current_ = std::chrono::milliseconds{0}; }

 private:
  std::chrono::milliseconds initial_, max_, current_{0};
};

}  // namespace blacktree::amqp::detail
