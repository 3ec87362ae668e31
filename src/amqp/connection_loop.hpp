// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Private to src/amqp: the one "connection thread" of the adapters. A
// ConnectionLoop owns a rabbitmq-c connection on a thread of its own and the
// reconnect policy: connect with backoff, heartbeats, wake-ups, stop. What is
// declared on each connection and what is done on it is the adapter's,
// through ConnectionWork.
//
//   struct State { ConnectionLoop loop; ...; };        // shared with the adapter's callers
//   class Work : public ConnectionWork { ... };         // holds a shared_ptr<State>
//   state->loop.start(std::make_unique<Work>(state));   // in the adapter's constructor
//   ... other threads queue work and call state->loop.wake() ...
//   state->loop.stop();                                 // in the adapter's stop(): joins

#include "connection.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace blacktree::amqp::detail {

/// What an adapter does on the connection its ConnectionLoop keeps open.
/// Every call comes from the loop's thread, one at a time; an exception that
/// escapes one ends the loop (recorded as its last error), never the process.
class ConnectionWork {
 public:
  virtual ~ConnectionWork() = default;
  /// A new connection is up, channel 1 open: declare, open further channels,
  /// reset what belongs to one connection. A failure tears it down and retries.
  virtual core::Result<void> on_connected(Connection& conn) = 0;
  /// One turn on the live connection, after a wake-up, traffic or a
  /// heartbeat interval: send what other threads asked for, read what has
  /// arrived (without blocking). A failure tears the connection down.
  virtual core::Result<void> on_ready(Connection& conn) = 0;
  /// The connection is gone (torn down after a failure, or closed by stop()):
  /// forget or fail what belonged to it. Also called once more as the loop
  /// ends, connected or not, so that nothing queued is left waiting: it must
  /// be idempotent.
  virtual void on_disconnected() {}
  /// Woken while there is no connection (waiting to retry): what other
  /// threads asked for meanwhile cannot be done on this connection.
  virtual void on_woken_offline() {}
  /// stop() was called with the connection up: settle what was asked before
  /// it, within the loop's connect_timeout. A failure abandons the connection.
  virtual core::Result<void> on_stopping(Connection& /*conn*/) { return {}; }
  /// When the work wants a turn even if nothing arrives (a retry it has
  /// scheduled); max(): never.
  virtual std::chrono::steady_clock::time_point wake_at() const { return std::chrono::steady_clock::time_point::max(); }
};

/// The adapters' constructors report a URL (or an option, check_options())
/// they cannot use by throwing std::invalid_argument with resolve_endpoints'
/// message (a constructor has no Result to return; it throws on the caller's
/// thread, never on the loop's).
Brokers resolve_or_throw(const AmqpOptions& options);

class ConnectionLoop {
 public:
  /// `role` names the connection to the broker ("<connection_name> <role>").
  /// Each connection attempt goes to `brokers`' next address.
  ConnectionLoop(AmqpOptions options, Brokers brokers, std::string role);
  ConnectionLoop(AmqpOptions options, AmqpEndpoint endpoint, std::string role)
      : ConnectionLoop(std::move(options), Brokers({std::move(endpoint)}), std::move(role)) {}
  ~ConnectionLoop() { stop(); }
  ConnectionLoop(const ConnectionLoop&) = delete;
  ConnectionLoop& operator=(const ConnectionLoop&) = delete;

  /// Starts the thread, which connects and then runs `work` until stop().
  void start(std::unique_ptr<ConnectionWork> work);
  /// Wakes the thread (another thread queued work for it). Any thread.
  void wake() noexcept { waker_.notify(); }
  /// Ends the loop (see ConnectionWork::on_stopping) and joins the thread.
  /// Returns within about twice connect_timeout even when the broker reads
  /// nothing (flow control, a memory alarm): then the socket is shut down
  /// under the thread's blocked write. Idempotent; any thread but the loop's own.
  void stop();

  /// For bounded waits inside on_stopping().
  Waker& waker() noexcept { return waker_; }
  const AmqpOptions& options() const noexcept { return options_; }
  /// The node connected now ("amqp://host:5672/"), or while there is none,
  /// every address it tries, comma-separated. Any thread.
  std::string where() const;

  /// True while a connection is up and on_connected() succeeded.
  bool connected() const noexcept { return connected_.load(); }
  /// Connections established, the first one included.
  std::uint64_t connects() const noexcept { return connects_.load(); }
  /// The last problem, for a person; empty if none yet.
  std::string last_error() const;
  void set_error(std::string message);
  /// To the options' log function, if any, prefixed "amqp <role>: ".
  void log(LogLevel level, std::string_view message) const;

 private:
  void run(ConnectionWork& work) noexcept;
  void loop(ConnectionWork& work);
  core::Result<void> connect(ConnectionWork& work);
  void teardown(ConnectionWork& work, const core::Error& error);
  /// After a teardown: waits the backoff, which restarts from
  /// reconnect_initial only when the connection had been up for reconnect_max.
  void back_off(ConnectionWork& work);
  void wait_for_retry(ConnectionWork& work, std::chrono::milliseconds delay);
  /// Waits for traffic, a wake-up, the work's wake_at or a heartbeat
  /// interval; false when the broker has missed its heartbeats.
  bool wait_for_traffic(const ConnectionWork& work);
  /// Frees the connection; the socket stops being stop()'s to shut down first.
  void release_connection(bool polite) noexcept;

  const AmqpOptions options_;
  const std::string role_;
  const std::string all_brokers_;  // describe() of every address
  Waker waker_;
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> connects_{0};
  mutable std::mutex error_mutex_;
  std::string last_error_;
  std::string connected_to_;  // the node of the connection up now; empty: none
  std::string last_logged_;  // the error last logged: a retry failing alike is not logged again

  // The thread's own.
  Brokers brokers_;
  Connection conn_;
  Backoff backoff_;
  std::chrono::steady_clock::time_point connected_at_{};

  // The open connection's socket, for stop() to shut down when the thread is
  // stuck writing; -1 before the thread closes it, under fd_mutex_.
  std::mutex fd_mutex_;
  int open_fd_ = -1;

  std::mutex done_mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;

  std::mutex stop_mutex_;
  std::thread thread_;
};

}  // namespace blacktree::amqp::detail
