// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "connection_loop.hpp"

#include <exception>
#include <utility>

namespace blacktree::amqp::detail {

ConnectionLoop::ConnectionLoop(AmqpOptions options, AmqpEndpoint endpoint, std::string role)
    : options_(std::move(options)),
      endpoint_(std::move(endpoint)),
      role_(std::move(role)),
      backoff_(options_.reconnect_initial, options_.reconnect_max) {}

void ConnectionLoop::start(std::unique_ptr<ConnectionWork> work) {
  if (!waker_.valid()) {
    set_error("amqp " + role_ + ": cannot create an eventfd (out of file descriptors?)");
    return;
  }
  thread_ = std::thread([this, work = std::move(work)]() mutable {
    run(*work);
    work.reset();  // on this thread, before join() returns: it may own what the adapter shares
  });
}

void ConnectionLoop::stop() {
  stop_requested_ = true;
  waker_.notify();
  std::lock_guard lock(stop_mutex_);
  if (thread_.joinable()) thread_.join();
}

std::string ConnectionLoop::last_error() const {
  std::lock_guard lock(error_mutex_);
  return last_error_;
}

void ConnectionLoop::set_error(std::string message) {
  std::lock_guard lock(error_mutex_);
  last_error_ = std::move(message);
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
  conn_.close();  // the broker takes back whatever was not settled
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
        wait_for_retry(work, backoff_.next());
        continue;
      }
      backoff_.reset();
    }
    waker_.drain();
    if (auto done = work.on_ready(conn_); !done) {
      teardown(work, done.error());
      continue;
    }
    if (!wait_for_traffic()) teardown(work, conn_.lost("missed heartbeats"));
  }
}

core::Result<void> ConnectionLoop::connect(ConnectionWork& work) {
  if (auto opened = conn_.open(endpoint_, options_, role_); !opened) return opened;
  if (auto ready = work.on_connected(conn_); !ready) return ready;
  connects_.fetch_add(1);
  connected_ = true;
  return {};
}

void ConnectionLoop::teardown(ConnectionWork& work, const core::Error& error) {
  set_error(error.message());
  connected_ = false;
  conn_.abandon();
  work.on_disconnected();
}

bool ConnectionLoop::wait_for_traffic() {
  if (conn_.has_buffered()) return true;
  const PollResult polled = wait(conn_.fd(), waker_, conn_.poll_timeout());
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
