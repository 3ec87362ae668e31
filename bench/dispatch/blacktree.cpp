// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The competitor under test: Dispatcher + WorkerPool with the in-memory queue,
// the loopback transport (no runner: every run succeeds at once) and a status
// sink that counts confirms, on an io_context run by `threads` threads.

#include "dispatch.hpp"

#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/health_monitor.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include <atomic>

#include <future>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace blacktree::bench {

namespace bt = blacktree::core;

namespace {

// A status sink that confirms every publish (posted to the handler's
// executor, as asio requires) and only counts them. InMemoryStatusSink keeps a
// copy of every status for tests to inspect; at hundreds of thousands of jobs
// that copy and its growing vector would be what this benchmark measures.
class CountingSink {
 public:
  explicit CountingSink(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  template <class Token>
  auto async_publish(const bt::JobResult&, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this](auto handler) {
          confirmed_.fetch_add(1, std::memory_order_relaxed);
          auto ex = asio::get_associated_executor(handler, executor_);
          asio::post(ex, [h = std::move(handler)]() mutable { std::move(h)(std::error_code{}); });
        },
        token);
  }

  // Batches (core::PublishesBatches): one post confirms the whole call.
  static constexpr bool publishes_batches = true;
  template <class Token>
  auto async_publish_some(std::span<const bt::JobResult* const> results, Token&& token) {
    return asio::async_initiate<Token, void(std::vector<std::error_code>)>(
        [this, n = results.size()](auto handler) {
          confirmed_.fetch_add(n, std::memory_order_relaxed);
          auto ex = asio::get_associated_executor(handler, executor_);
          asio::post(ex, [h = std::move(handler), n]() mutable { std::move(h)(std::vector<std::error_code>(n)); });
        },
        token);
  }

  std::size_t size() const { return confirmed_.load(std::memory_order_relaxed); }

 private:
  asio::any_io_executor executor_;
  std::atomic<std::size_t> confirmed_{0};
};
static_assert(bt::StatusSink<CountingSink> && bt::PublishesBatches<CountingSink>);

}  // namespace

Throughput run_blacktree(const DispatchConfig& config) {
  using namespace std::chrono_literals;
  // Declared first so that it outlives everything holding its executor.
  asio::io_context io(static_cast<int>(config.threads));

  bt::WorkerPool pool(io.get_executor());
  bt::InMemoryQueue queue(io.get_executor());
  bt::LoopbackTransport transport(io.get_executor());
  CountingSink sink(io.get_executor());

  // No runner: every run succeeds at once.
  for (std::size_t i = 0; i < config.workers; ++i) transport.add_endpoint(numbered("lo:", i));
  add_live_workers(pool, config.workers, config.capacity);
  publish_jobs(queue, config.jobs);

  std::optional<bt::Dispatcher<bt::InMemoryQueue, bt::LoopbackTransport, CountingSink>> dispatcher;
  bt::DispatcherOptions options;
  options.max_in_flight = config.max_in_flight;
  dispatcher.emplace(io.get_executor(), queue, transport, sink, pool, options);
  std::optional<bt::HealthMonitor<bt::LoopbackTransport>> monitor;
  if (config.ping_interval.count() > 0) {
    bt::HealthOptions health;
    health.interval = config.ping_interval;
    health.timeout = config.ping_interval;
    monitor.emplace(io.get_executor(), transport, pool, health);
    monitor->start();
  }

  const auto start = Clock::now();
  dispatcher->start();
  std::vector<std::thread> threads;
  threads.reserve(config.threads);
  for (unsigned t = 0; t < config.threads; ++t) threads.emplace_back([&io] { io.run(); });

  // Poll rather than InMemoryStatusSink::wait_for: a waiter on its condition
  // variable would be woken by every single publish and steal a core. 1 ms
  // granularity is under 0.1% of a measurement.
  const auto give_up = start + 600s;
  while (sink.size() < config.jobs && Clock::now() < give_up) std::this_thread::sleep_for(1ms);
  const auto stop = Clock::now();

  // Not timed: a graceful stop settles the last acks; then run() runs out of work.
  std::promise<std::error_code> stopped;
  dispatcher->async_stop(10s, [&stopped](std::error_code ec) { stopped.set_value(ec); });
  auto stop_result = stopped.get_future();
  if (stop_result.wait_for(30s) != std::future_status::ready) {
    io.stop();
    for (auto& thread : threads) thread.join();
    throw std::runtime_error("the dispatcher did not stop within 30 s");
  }
  if (monitor) {
    monitor->stop();
    monitor.reset();
  }
  for (auto& thread : threads) thread.join();
  const auto stats = dispatcher->stats();
  // Let the dispatcher's destructor finish on the io_context before anything it refers to goes.
  dispatcher.reset();
  io.restart();
  io.run();

  if (sink.size() != config.jobs || stats.succeeded != config.jobs || queue.acked() != config.jobs)
    throw std::runtime_error("blacktree run incomplete: " + std::to_string(sink.size()) + " statuses, " +
                             std::to_string(stats.succeeded) + " succeeded, " + std::to_string(queue.acked()) +
                             " acked of " + std::to_string(config.jobs));
  return Throughput{config.jobs, std::chrono::duration<double>(stop - start).count()};
}

}  // namespace blacktree::bench
