// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "connection_loop.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <exception>
#include <utility>

namespace blacktree::amqp::detail {

ConnectionLoop::ConnectionLoop(AmqpOptions options, Brokers brokers, std::string role)
    : options_(std::move(options)),
      role_(std::move(role)),
      all_brokers_(describe(brokers.all())),
      brokers_(std::move(brokers)),
      backoff_(options_.reconnect_initial, options_.reconnect_max) {}

void ConnectionLoop::start(std::unique_ptr<ConnectionWork> work) {
  if (!waker_.valid()) {
    set_error("amqp " + role_ + ": cannot create an eventfd (out of file descriptors?)");
    return;
  }
  thread_ = std::thread([this, work = std::move(work)]() mutable {
    run(*work);
    work.reset();  // on this thread, before join() returns: it may own what the adapter shares
    std::lock_guard lock(done_mutex_);
    done_ = true;
    done_cv_.notify_all();
  });
}

void ConnectionLoop::stop() {
  stop_requested_ = true;
  waker_.notify();
  std::lock_guard lock(stop_mutex_);
  if (!thread_.joinable()) return;
  // on_stopping and the polite close are each bounded by connect_timeout. A
  // thread busy beyond both is blocked in a write the broker does not read
  // (a publisher under flow control or a memory alarm; rabbitmq-c writes
  // without a deadline): shutting the socket down makes that write fail.
  const auto deadline = 2 * options_.connect_timeout + std::chrono::milliseconds(500);
  {
    std::unique_lock done(done_mutex_);
    if (!done_cv_.wait_for(done, deadline, [this] { return done_; })) {
      std::lock_guard fd(fd_mutex_);
      if (open_fd_ >= 0) ::shutdown(open_fd_, SHUT_RDWR);
    }
  }
  thread_.join();
}

std::string ConnectionLoop::last_error() const {
  std::lock_guard lock(error_mutex_);
  return last_error_;
}

std::string ConnectionLoop::where() const {
  std::lock_guard lock(error_mutex_);
  return connected_to_.empty() ? all_brokers_ : connected_to_;
}

void ConnectionLoop::set_error(std::string message) {
  std::lock_guard lock(error_mutex_);
  last_error_ = std::move(message);
}

void ConnectionLoop::log(LogLevel level, std::string_view message) const {
  if (!options_.log) return;
  try {
    options_.log(level, "amqp " + role_ + ": " + std::string(message));
  } catch (...) {  // a log function that throws loses its line, not the connection
  }
}

void ConnectionLoop::run(ConnectionWork& work) noexcept {
  try {
    loop(work);
    if (conn_.is_open()) {
      if (auto settled = work.on_stopping(conn_); !settled) teardown(work, settled.error());
    }
  } catch (const std::exception& e) {  // never across the thread boundary
    try {
      set_error("amqp " + role_ + " thread failed: " + e.what());
    } catch (...) {
    }
  }
  connected_ = false;
  {
    std::lock_guard lock(error_mutex_);
    connected_to_.clear();
  }
  release_connection(/*polite=*/true);  // the broker takes back whatever was not settled
  try {
    work.on_disconnected();
  } catch (...) {  // out of memory while failing what is left: the broker has it back anyway
  }
}

void ConnectionLoop::loop(ConnectionWork& work) {
  while (!stop_requested_) {
    if (!conn_.is_open()) {
      if (auto connected = connect(work); !connected) {
        teardown(work, connected.error());
        back_off(work);
        continue;
      }
    }
    waker_.drain();
    if (auto done = work.on_ready(conn_); !done) {
      // Also here: a connection that comes up and fails at once (a consume
      // the broker refuses) would otherwise be reopened in a tight loop.
      teardown(work, done.error());
      back_off(work);
      continue;
    }
    if (!wait_for_traffic(work)) {
      teardown(work, conn_.lost("missed heartbeats"));
      back_off(work);
    }
  }
}

core::Result<void> ConnectionLoop::connect(ConnectionWork& work) {
  // A failed attempt, or the loss of the connection before, moves on to the next node.
  if (auto opened = conn_.open(brokers_.next(), options_, role_); !opened) return opened;
  {
    std::lock_guard lock(fd_mutex_);
    open_fd_ = conn_.fd();
  }
  if (auto ready = work.on_connected(conn_); !ready) return ready;
  connects_.fetch_add(1);
  connected_ = true;
  connected_at_ = std::chrono::steady_clock::now();
  bool recovered;
  {
    std::lock_guard lock(error_mutex_);
    recovered = !last_logged_.empty();
    last_logged_.clear();
    connected_to_ = conn_.where();
  }
  // Named on every connect: with several nodes, which one it is matters.
  if (recovered)
    log(LogLevel::info, "connected again to " + conn_.where());
  else if (connects_.load() == 1 || brokers_.size() > 1)
    log(LogLevel::info, "connected to " + conn_.where());
  return {};
}

void ConnectionLoop::teardown(ConnectionWork& work, const core::Error& error) {
  bool repeated;
  {
    std::lock_guard lock(error_mutex_);
    last_error_ = error.message();
    repeated = last_logged_ == last_error_;
    last_logged_ = last_error_;
  }
  if (!repeated && !stop_requested_) log(LogLevel::error, error.message());
  if (connected_ && std::chrono::steady_clock::now() - connected_at_ >= options_.reconnect_max) backoff_.reset();
  connected_ = false;
  {
    std::lock_guard lock(error_mutex_);
    connected_to_.clear();
  }
  release_connection(/*polite=*/false);
  work.on_disconnected();
}

void ConnectionLoop::back_off(ConnectionWork& work) { wait_for_retry(work, backoff_.next()); }

void ConnectionLoop::release_connection(bool polite) noexcept {
  if (polite) conn_.send_close();
  {
    std::lock_guard lock(fd_mutex_);
    open_fd_ = -1;
  }
  conn_.abandon();
}

bool ConnectionLoop::wait_for_traffic(const ConnectionWork& work) {
  // stop() may have come after the loop's check, its wake-up taken by the
  // drain() before this turn: never sleep through it.
  if (stop_requested_ || conn_.has_buffered()) return true;
  std::chrono::milliseconds timeout = conn_.poll_timeout();
  if (const auto at = work.wake_at(); at != std::chrono::steady_clock::time_point::max()) {
    const auto now = std::chrono::steady_clock::now();
    const auto until = at <= now ? std::chrono::milliseconds(0)
                                 : std::chrono::ceil<std::chrono::milliseconds>(at - now);
    timeout = timeout.count() < 0 ? until : std::min(timeout, until);
  }
  const PollResult polled = wait(conn_.fd(), waker_, timeout);
  if (polled.socket_ready) conn_.note_received();
  return polled.socket_ready || polled.woken || !conn_.heartbeat_expired();
}

void ConnectionLoop::wait_for_retry(ConnectionWork& work, std::chrono::milliseconds delay) {
  const auto until = std::chrono::steady_clock::now() + delay;
  while (!stop_requested_) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= until) return;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now) + std::chrono::milliseconds(1);
    if (wait(-1, waker_, left).woken) {
      waker_.drain();
      work.on_woken_offline();
    }
  }
}

}  // namespace blacktree::amqp::detail
