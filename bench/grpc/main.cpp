// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree_bench_grpc [--concurrency 1,8,64] [--calls N] [--reps R] [--warmup W]
//                      [--io-threads T] [--capacity C] [--split 0|1]
//
// RunJob round trips with a runner that succeeds at once, closed loop with
// `concurrency` calls in flight, on 127.0.0.1 in one process:
//   bare-stream  the same server-streaming RunJob (same request, same three
//                replies) on plain gRPC callback API, both sides: the baseline
//   bare-ping    a unary Ping on plain gRPC: the floor of any round trip
//   blacktree    GrpcTransport::async_run -> WorkerService -> JobRunner
// and, with --split 1 (default), the two halves crossed, to see which side
// costs what:
//   transport>bare  GrpcTransport against the bare server
//   bare>service    the bare client against WorkerService
// Each row alternates the competitors `reps` times on fresh clients against servers
// that stay up; calls/s and CPU per call are medians, latency percentiles
// are over every call of every rep. Ratios are blacktree / baseline.

#include "bench.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace {

using namespace blacktree::bench::grpc;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

struct Summary {
  std::vector<double> rate, cpu_us;
  std::vector<double> latency;
  std::size_t errors = 0;

  void add(const Sample& s, std::size_t calls) {
    rate.push_back(static_cast<double>(calls) / s.seconds);
    cpu_us.push_back(s.cpu_seconds * 1e6 / static_cast<double>(calls));
    latency.insert(latency.end(), s.latency_us.begin(), s.latency_us.end());
    errors += s.errors;
  }
  double calls_per_s() const { return median(rate); }
  double p(double q) { return percentile(latency, q); }
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::size_t> concurrencies{1, 8, 64};
  std::size_t calls = 10000, reps = 3, warmup = 500;
  unsigned io_threads = 2, capacity = 0;
  bool split = true;
  CLI::App app{"blacktree_bench_grpc: RunJob round trips through GrpcTransport vs bare gRPC", "blacktree_bench_grpc"};
  app.add_option("--concurrency", concurrencies, "calls in flight per row, A,B,...")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--calls", calls, "calls per measurement")->capture_default_str();
  app.add_option("--reps", reps, "measurements per figure; the median is reported")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warmup", warmup, "calls before measuring")->capture_default_str();
  app.add_option("--io-threads", io_threads, "threads of the client's io_context")->capture_default_str();
  app.add_option("--capacity", capacity, "the worker's capacity (0: twice the largest concurrency)")
      ->capture_default_str();
  app.add_option("--split", split, "0|1: also measure the two halves crossed (transport>bare, bare>service)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const std::size_t max_concurrency = *std::max_element(concurrencies.begin(), concurrencies.end());
  // A worker removes a finished job from its table just after sending the
  // result, so a closed loop at exactly `capacity` would see spurious
  // "full" refusals; twice the concurrency leaves room for that.
  if (capacity == 0) capacity = static_cast<unsigned>(2 * max_concurrency);

  try {
    auto bare_server = start_bare_server();
    auto blacktree_server = start_blacktree_server(capacity);
    std::printf("RunJob round trips, no-op runner, %zu calls per run, median of %zu, %zu warm-up calls, "
                "worker capacity %u, transport io threads %u\n\n",
                calls, reps, warmup, capacity, io_threads);
    std::printf("%5s  %-12s %10s %9s %9s %11s %7s\n", "conc", "impl", "calls/s", "p50 us", "p99 us", "cpu us/call",
                "errors");

    for (const auto concurrency : concurrencies) {
      run_bare_stream(bare_server->address(), concurrency, warmup);
      run_bare_ping(bare_server->address(), concurrency, warmup);
      run_blacktree(blacktree_server->address(), concurrency, warmup, io_threads);

      Summary stream, ping, ours, client_only, server_only;
      for (std::size_t r = 0; r < reps; ++r) {
        stream.add(run_bare_stream(bare_server->address(), concurrency, calls), calls);
        ping.add(run_bare_ping(bare_server->address(), concurrency, calls), calls);
        ours.add(run_blacktree(blacktree_server->address(), concurrency, calls, io_threads), calls);
        if (split) {
          client_only.add(run_blacktree(bare_server->address(), concurrency, calls, io_threads), calls);
          server_only.add(run_bare_stream(blacktree_server->address(), concurrency, calls), calls);
        }
      }
      struct Row {
        const char* name;
        Summary* s;
      };
      std::vector<Row> rows{Row{"bare-stream", &stream}, Row{"bare-ping", &ping}, Row{"blacktree", &ours}};
      if (split) {
        rows.push_back(Row{"transport>bare", &client_only});
        rows.push_back(Row{"bare>service", &server_only});
      }
      for (const Row row : rows) {
        std::printf("%5zu  %-12s %10.0f %9.0f %9.0f %11.1f %7zu\n", concurrency, row.name, row.s->calls_per_s(),
                    row.s->p(50), row.s->p(99), median(row.s->cpu_us), row.s->errors);
      }
      std::printf("%5zu  ratios: calls/s blacktree/bare-stream %.2f, blacktree/bare-ping %.2f; "
                  "p50 latency blacktree/bare-stream %.2f; cpu/call blacktree/bare-stream %.2f\n",
                  concurrency, ours.calls_per_s() / stream.calls_per_s(), ours.calls_per_s() / ping.calls_per_s(),
                  ours.p(50) / stream.p(50), median(ours.cpu_us) / median(stream.cpu_us));
      if (split) {
        std::printf("%5zu  split: transport>bare %.2f, bare>service %.2f of bare-stream calls/s; cpu/call added by "
                    "the transport %+.1f us, by the service %+.1f us\n",
                    concurrency, client_only.calls_per_s() / stream.calls_per_s(),
                    server_only.calls_per_s() / stream.calls_per_s(),
                    median(client_only.cpu_us) - median(stream.cpu_us),
                    median(server_only.cpu_us) - median(stream.cpu_us));
      }
      std::printf("\n");
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
