// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Helpers shared by the unit tests: drive an io_context until a condition
// holds (never sleeping), with a deadline that fails the test instead of hanging.

#include <blacktree/core/job.hpp>

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <string>

namespace blacktree::test {

using namespace std::chrono_literals;

/// Runs handlers of `io` (on this thread) until `done()` is true. Returns
/// false if `timeout` passed first. Waits on the io_context, never sleeps.
inline bool run_until(asio::io_context& io, const std::function<bool()>& done,
                      std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    if (io.stopped()) io.restart();
    io.run_one_for(deadline - now);
  }
  return true;
}

/// Runs every handler that is ready now, without waiting for timers.
inline void run_ready(asio::io_context& io) {
  if (io.stopped()) io.restart();
  io.poll();
}

inline core::Job make_job(std::string id, core::Labels labels = {}) {
  core::Job job;
  job.id = std::move(id);
  job.required_labels = std::move(labels);
  return job;
}

inline core::WorkerInfo make_worker(std::string id, std::uint32_t capacity = 1, core::Labels labels = {}) {
  core::WorkerInfo info;
  info.id = id;
  info.address = "loopback:" + id;
  info.capacity = capacity;
  info.labels = std::move(labels);
  info.incarnation = "1";
  return info;
}

}  // namespace blacktree::test
