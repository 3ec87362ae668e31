// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The contender: the orchestrator's path minus gRPC -- AmqpJobSource ->
// Dispatcher (WorkerPool, no-op LoopbackTransport workers) -> AmqpStatusSink,
// acking each job once its status is confirmed.

#include "bench.hpp"

#include <blacktree/amqp/amqp.hpp>
#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <thread>
#include <utility>

namespace blacktree::bench::amqp {

namespace {
// The sink seen without async_publish_some (--no-sink-batches): one call per
// status, as a sink written before batches; shows what the batches buy.
struct SingleSink {
  blacktree::amqp::AmqpStatusSink& sink;
  template <class Token>
  auto async_publish(const core::JobResult& r, Token&& token) {
    return sink.async_publish(r, std::forward<Token>(token));
  }
};
static_assert(core::StatusSink<SingleSink> && !core::PublishesBatches<SingleSink>);
}  // namespace

double run_blacktree(const Config& config, const std::string& queue, const std::string& status_queue) {
  asio::io_context io;
  blacktree::amqp::AmqpOptions options;
  options.url = config.url;
  options.execute_queue = queue;
  options.status_queue = status_queue;
  options.dead_letter_exchange = queue + ".dlx";
  options.dead_letter_queue = queue + ".dlq";
  blacktree::amqp::AmqpJobSource source(io.get_executor(), options);
  blacktree::amqp::AmqpStatusSink sink(io.get_executor(), options);
  core::LoopbackTransport transport(io.get_executor());
  core::WorkerPool pool(io.get_executor());
  core::WorkerInfo worker;
  worker.id = "bench";
  worker.address = "loopback:bench";
  worker.capacity = static_cast<std::uint32_t>(config.window);
  worker.incarnation = "1";
  transport.add_endpoint(worker.address, worker.capacity);
  if (auto r = pool.register_worker(worker); !r) throw std::runtime_error(r.error().message());
  if (auto r = pool.mark_alive(worker.id); !r) throw std::runtime_error(r.error().message());

  // Connected first, so the clock measures jobs, not the handshake.
  while (!(source.connected() && sink.connected())) std::this_thread::sleep_for(std::chrono::milliseconds(5));

  SingleSink single{sink};
  std::optional<core::Dispatcher<blacktree::amqp::AmqpJobSource, core::LoopbackTransport,
                                 blacktree::amqp::AmqpStatusSink>> batched;
  std::optional<core::Dispatcher<blacktree::amqp::AmqpJobSource, core::LoopbackTransport, SingleSink>> unbatched;
  const auto start = std::chrono::steady_clock::now();
  if (config.sink_batches) {
    batched.emplace(io.get_executor(), source, transport, sink, pool);
    batched->start();
  } else {
    unbatched.emplace(io.get_executor(), source, transport, single, pool);
    unbatched->start();
  }
  // Finished when every job's ack has been handed to the broker.
  asio::steady_timer tick(io);
  std::function<void()> poll = [&] {
    if (source.stats().acked >= config.jobs) {
      io.stop();
      return;
    }
    tick.expires_after(std::chrono::milliseconds(1));
    tick.async_wait([&](std::error_code) { poll(); });
  };
  poll();
  io.run();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  source.stop();
  sink.stop();
  return seconds;
}

}  // namespace blacktree::bench::amqp
