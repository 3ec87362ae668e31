// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// hello: the smallest program built on blacktree::core. Jobs go from an
// in-memory queue to a "worker" that is a lambda in this process, and their
// statuses to an in-memory sink. docs/embedding.md starts from this file.

#include <blacktree/core.hpp>

#include <asio/io_context.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

namespace bt = blacktree::core;
using namespace std::chrono_literals;

int main() {
  asio::io_context io;
  bt::InMemoryQueue queue(io.get_executor());          // where jobs come from
  bt::LoopbackTransport transport(io.get_executor());  // how they reach workers: here, function calls
  bt::InMemoryStatusSink sink(io.get_executor());      // where their final statuses go
  bt::WorkerPool pool(io.get_executor());              // the workers and their free slots
  bt::Dispatcher<bt::InMemoryQueue, bt::LoopbackTransport, bt::InMemoryStatusSink> dispatcher(
      io.get_executor(), queue, transport, sink, pool);

  // One worker with two slots, whose work is this lambda.
  transport.add_endpoint("in-process", 2, [](bt::LoopbackTransport::Call call) {
    bt::JobResult result;
    result.success = call.job().id != "bad";
    result.logs = "hello, " + call.job().id;
    if (!result.success) result.error = "this worker refuses bad jobs";
    call.complete(std::move(result));
  });
  bt::WorkerInfo worker;
  worker.id = "worker-1";
  worker.address = "in-process";
  worker.capacity = 2;
  // A HealthMonitor marks a worker alive when it answers its ping; here we say so ourselves.
  if (!pool.register_worker(worker) || !pool.mark_alive(worker.id)) return 1;

  dispatcher.start();
  for (const char* id : {"alpha", "beta", "bad", "gamma"}) {
    bt::Job job;
    job.id = id;
    queue.publish(std::move(job));
  }

  // A job is acked once its status is confirmed; then stop, gracefully.
  while (queue.acked() < 4)
    if (io.run_one_for(5s) == 0) return 1;
  std::optional<std::error_code> stopped;
  dispatcher.async_stop(1s, [&](std::error_code ec) { stopped = ec; });
  while (!stopped) io.run_one();

  auto results = sink.results();
  std::sort(results.begin(), results.end(), [](auto& a, auto& b) { return a.job_id < b.job_id; });
  for (const bt::JobResult& r : results)
    std::printf("%-6s %-6s on %s: %s\n", r.job_id.c_str(), r.success ? "ok" : "FAILED", r.worker_id.c_str(),
                (r.success ? r.logs : r.error).c_str());
  return *stopped ? 1 : 0;
}
