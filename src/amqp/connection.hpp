// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Private to src/amqp: a rabbitmq-c connection owned by one thread, the
// eventfd that wakes that thread, and the poll() that waits on both. Nothing
// here throws; failures come back as messages a person can act on.

#include <blacktree/amqp/options.hpp>

#include <amqp.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace blacktree::amqp::detail {

/// Text for a failed rabbitmq-c call ("" when `reply` is normal).
std::string describe_reply(const amqp_rpc_reply_t& reply);
inline std::string_view to_view(amqp_bytes_t bytes) {
  return {static_cast<const char*>(bytes.bytes), bytes.len};
}
inline amqp_bytes_t to_bytes(std::string_view s) {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}

/// An eventfd: other threads notify(), the owning thread polls fd() and drain()s.
class Waker {
 public:
  Waker();
  ~Waker();
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  void notify() noexcept;
  void drain() noexcept;
  int fd() const noexcept { return fd_; }

 private:
  int fd_ = -1;
};

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

  /// Connects, logs in and opens channel 1. Returns "" or what went wrong.
  std::string open(const AmqpEndpoint& endpoint, const AmqpOptions& options, std::string_view role);
  bool is_open() const noexcept { return state_ != nullptr; }
  amqp_connection_state_t get() const noexcept { return state_; }
  int fd() const noexcept;
  /// rabbitmq-c holds frames or bytes it has not handed out yet: read them
  /// before waiting on the socket, which will not signal them.
  bool has_buffered() const noexcept;

  /// Opens channel `ch` (> 1; 1 is opened by open()). Returns "" or the error.
  std::string open_channel(amqp_channel_t ch);
  /// Declares a durable queue; one that exists with other arguments is used as it is.
  std::string declare_queue(amqp_channel_t ch, const std::string& name);
  std::string declare_exchange(amqp_channel_t ch, const std::string& name, const std::string& type);
  std::string bind_queue(amqp_channel_t ch, const std::string& queue, const std::string& exchange,
                         const std::string& key);
  std::string confirm_select(amqp_channel_t ch);

  /// Polite close (bounded by the RPC timeout), then frees everything.
  void close() noexcept;
  /// Frees everything without a word to the broker (after an error).
  void abandon() noexcept;

  /// Heartbeat bookkeeping: rabbitmq-c only notices a silent broker while it
  /// blocks in a read, which this design never does, so the owner tracks it.
  void note_received() noexcept { last_received_ = std::chrono::steady_clock::now(); }
  /// True when the broker has said nothing for more than two heartbeat intervals.
  bool heartbeat_expired() const noexcept;
  /// The idle step every connection thread shares: returns at once when
  /// rabbitmq-c already holds data; otherwise waits for the socket, the waker
  /// or the heartbeat timeout. True when the broker has missed its
  /// heartbeats: the caller tears the connection down.
  bool wait_for_traffic(const Waker& waker);
  /// How long the owner may wait in poll() and still send heartbeats in time.
  std::chrono::milliseconds poll_timeout() const noexcept;

 private:
  std::string reopen_after_channel_error(amqp_channel_t ch);

  amqp_connection_state_t state_ = nullptr;
  std::chrono::seconds heartbeat_{0};
  std::chrono::steady_clock::time_point last_received_{};
};

/// "" unless `frame` is the broker closing a channel or the connection (then
/// answered with close-ok and described for a person).
std::string closed_by_broker(Connection& conn, const amqp_frame_t& frame, const std::string& where);

/// Reads the method frames that have arrived, without blocking, handing each
/// to `on_method(frame)` (which returns "" or an error). Returns "" or why the
/// connection is unusable.
template <class OnMethod>
std::string read_methods(Connection& conn, const std::string& where, OnMethod&& on_method) {
  for (int i = 0; i < 256; ++i) {  // bounded, so the owner's commands get their turn
    amqp_maybe_release_buffers(conn.get());
    timeval zero{0, 0};
    amqp_frame_t frame{};
    const int rc = amqp_simple_wait_frame_noblock(conn.get(), &frame, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) return {};
    if (rc != AMQP_STATUS_OK) return "lost the connection to " + where + ": " + amqp_error_string2(rc);
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // e.g. the content of a basic.return
    if (auto error = closed_by_broker(conn, frame, where); !error.empty()) return error;
    if (auto error = on_method(frame); !error.empty()) return error;
  }
  return {};
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
