// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree_bench_dispatch: no-op jobs through Dispatcher + WorkerPool (in-memory
// queue, loopback transport) for several worker counts, against asio::thread_pool
// running the same no-op jobs in the same run, plus WorkerPool acquire/release
// latency percentiles. Prints jobs/s, the ratio to the asio baseline and
// PASS/MISS against the targets (>= 0.25x asio at every worker count, the aim
// beyond that 0.5x;
// the largest worker count within 20% of the smallest). docs/benchmarks.md
// records the figures.
//
// Each throughput row alternates baseline and blacktree measurements `reps`
// times and reports medians, so a change in machine load hits both sides.

#include "dispatch.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace blacktree::bench;

struct Options {
  std::vector<std::size_t> workers{2, 64, 10'000};
  std::size_t jobs = 300'000;              // blacktree jobs per measurement
  std::size_t baseline_jobs = 16'000'000;  // asio jobs per measurement
  std::size_t reps = 3;
  std::size_t samples = 5'000'000;         // latency samples per measurement
  std::uint32_t capacity = 1;
  unsigned threads = 2;
  bool throughput = true;
  bool latency = true;
  bool health = false;
  bool floor = false;
  std::vector<std::size_t> health_workers{2, 10'000};
  std::uint32_t ping_interval_ms = 1000;
  std::size_t health_rounds = 5;
  std::size_t max_in_flight = 0;
};

constexpr double target_ratio = 0.25;    // blacktree jobs/s >= 0.25 x asio jobs/s
constexpr double target_scaling = 0.8;   // largest worker count >= 0.8 x smallest

// Flags as the services take them (CLI11): `--jobs 1000` or `--jobs=1000`.
void add_options(CLI::App& app, Options& o) {
  app.footer("Pick job counts so each measurement takes 1-3 s (printed as 's/run').");
  app.add_option("--workers", o.workers, "registered workers per row, A,B,...")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--jobs", o.jobs, "blacktree jobs per measurement")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--baseline-jobs", o.baseline_jobs, "asio::thread_pool jobs per measurement")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--reps", o.reps, "measurements per figure; the median is reported")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--samples", o.samples, "acquire/release samples per measurement")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--capacity", o.capacity, "slots per worker")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--threads", o.threads, "threads for both the io_context and the thread_pool")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--max-in-flight", o.max_in_flight,
                 "the dispatcher's window (DispatcherOptions::max_in_flight); 0: every slot of the pool")
      ->capture_default_str();
  auto* throughput_only = app.add_flag_callback("--throughput-only", [&o] { o.latency = false; },
                                                "measure throughput only");
  app.add_flag("--floor", o.floor,
               "also the floor: the same queue and pool under a sketch of a batched dispatcher (floor.cpp)");
  app.add_flag_callback("--latency-only", [&o] { o.throughput = false; }, "measure acquire/release latency only")
      ->excludes(throughput_only);
  app.add_flag_callback("--health-only",
                        [&o] {
                          o.health = true;
                          o.throughput = o.latency = false;
                        },
                        "measure the health monitor only: its CPU per ping interval with N workers answering, and "
                        "dispatch throughput while it pings them");
  app.add_option("--health-workers", o.health_workers, "registered workers per health row, A,B,...")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--ping-interval-ms", o.ping_interval_ms, "the health monitor's interval")
      ->check(CLI::Range(10u, 60000u))
      ->capture_default_str();
  app.add_option("--health-rounds", o.health_rounds, "ping intervals per CPU measurement")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const char* verdict(bool pass) { return pass ? "PASS" : "MISS"; }

struct Row {
  std::size_t workers = 0;
  double blacktree = 0, blacktree_seconds = 0;
  double asio = 0, asio_seconds = 0;
};

std::vector<Row> throughput(const Options& o) {
  std::printf("== Throughput: no-op jobs, %u threads, median of %zu ==\n", o.threads, o.reps);
  std::printf("blacktree: Dispatcher<InMemoryQueue, LoopbackTransport, counting sink> + WorkerPool, "
              "%zu jobs/run, capacity %u/worker\n",
              o.jobs, o.capacity);
  std::printf("asio:      asio::thread_pool(%u), %zu posted no-op jobs/run\n\n", o.threads, o.baseline_jobs);
  std::printf("%8s %16s %8s %16s %8s %8s %6s\n", "workers", "blacktree jobs/s", "s/run", "asio jobs/s", "s/run",
              "ratio", ">=0.25");
  std::vector<Row> rows;
  for (std::size_t workers : o.workers) {
    std::vector<double> bt_rate, bt_s, asio_rate, asio_s;
    for (std::size_t r = 0; r < o.reps; ++r) {
      const auto a = run_asio_baseline(o.baseline_jobs, o.threads);
      asio_rate.push_back(a.jobs_per_second());
      asio_s.push_back(a.seconds);
      const auto b = run_blacktree(DispatchConfig{workers, o.capacity, o.jobs, o.threads, {}, o.max_in_flight});
      bt_rate.push_back(b.jobs_per_second());
      bt_s.push_back(b.seconds);
    }
    Row row{workers, median(bt_rate), median(bt_s), median(asio_rate), median(asio_s)};
    const double ratio = row.blacktree / row.asio;
    std::printf("%8zu %16.0f %8.2f %16.0f %8.2f %8.3f %6s\n", workers, row.blacktree, row.blacktree_seconds,
                row.asio, row.asio_seconds, ratio, verdict(ratio >= target_ratio));
    std::fflush(stdout);
    rows.push_back(row);
  }
  if (rows.size() >= 2) {
    const auto [lo, hi] = std::minmax_element(rows.begin(), rows.end(),
                                              [](const Row& a, const Row& b) { return a.workers < b.workers; });
    const double scaling = hi->blacktree / lo->blacktree;
    std::printf("\n%zu workers vs %zu workers: %.3f (target >= %.2f) %s\n", hi->workers, lo->workers, scaling,
                target_scaling, verdict(scaling >= target_scaling));
  }
  std::printf("\n");
  return rows;
}

void print_latency(const char* what, std::size_t workers, const Latency& l) {
  std::printf("%-16s %8zu %9.0f %9.0f %9.0f %9.0f %9.0f %9.0f\n", what, workers, l.p50, l.p90, l.p99, l.p999, l.mean,
              l.max);
}

void latency(const Options& o) {
  std::printf("== WorkerPool latency, ns: one io thread, %zu samples, median of %zu per column ==\n", o.samples,
              o.reps);
  std::printf("acquire+release: async_acquire() with a free slot until its handler has run and released it\n");
  std::printf("hand-off:        all slots leased, one acquire waiting; Lease::release() until that handler runs\n\n");
  std::printf("%-16s %8s %9s %9s %9s %9s %9s %9s\n", "", "workers", "p50", "p90", "p99", "p99.9", "mean", "max");
  for (auto [what, run] : {std::pair{"acquire+release", &run_acquire_release}, std::pair{"hand-off", &run_handoff}}) {
    for (std::size_t workers : o.workers) {
      std::vector<double> p50, p90, p99, p999, mean, max;
      for (std::size_t r = 0; r < o.reps; ++r) {
        const Latency l = run(workers, o.samples);
        p50.push_back(l.p50);
        p90.push_back(l.p90);
        p99.push_back(l.p99);
        p999.push_back(l.p999);
        mean.push_back(l.mean);
        max.push_back(l.max);
      }
      Latency m;
      m.p50 = median(p50);
      m.p90 = median(p90);
      m.p99 = median(p99);
      m.p999 = median(p999);
      m.mean = median(mean);
      m.max = median(max);
      print_latency(what, workers, m);
      std::fflush(stdout);
    }
  }
  std::printf("\n");
}

void health(const Options& o) {
  using std::chrono::milliseconds;
  const milliseconds interval(o.ping_interval_ms);
  std::printf("== HealthMonitor: loopback workers answering pings every %u ms, %u threads, median of %zu ==\n",
              o.ping_interval_ms, o.threads, o.reps);
  std::printf("cpu/interval: process CPU (all threads) per ping interval over %zu intervals, nothing else running\n",
              o.health_rounds);
  std::printf("dispatch:     jobs/s as in the throughput table (%zu jobs), without and with the monitor pinging\n\n",
              o.jobs);
  std::printf("%8s %14s %14s %16s %16s %8s\n", "workers", "cpu ms/interval", "pings/interval", "jobs/s no monitor",
              "jobs/s monitor", "ratio");
  for (std::size_t workers : o.health_workers) {
    std::vector<double> cpu, pings, plain, monitored;
    for (std::size_t r = 0; r < o.reps; ++r) {
      const auto cost = run_health(workers, interval, o.health_rounds, o.threads);
      cpu.push_back(cost.cpu_ms_per_round);
      pings.push_back(static_cast<double>(cost.pings) / static_cast<double>(o.health_rounds));
      const DispatchConfig config{workers, o.capacity, o.jobs, o.threads, {}, o.max_in_flight};
      plain.push_back(run_blacktree(config).jobs_per_second());
      DispatchConfig pinged = config;
      pinged.ping_interval = interval;
      monitored.push_back(run_blacktree(pinged).jobs_per_second());
    }
    const double with = median(monitored), without = median(plain);
    std::printf("%8zu %14.2f %14.0f %16.0f %16.0f %8.3f\n", workers, median(cpu), median(pings), without, with,
                with / without);
    std::fflush(stdout);
  }
  std::printf("\n");
}

// The floor beside asio (floor.cpp), measured the same way as the throughput table.
void floor_table(const Options& o) {
  std::printf("== Floor: the same queue and pool under a sketch of a batched dispatcher, %u threads, median "
              "of %zu ==\n",
              o.threads, o.reps);
  std::printf("bare: jobs in slots, runs and confirms completed as batches of slot indexes, acks in one call\n");
  std::printf("book: and the Dispatcher's per-job records (finished record, index by id, 3 clock reads, status id)\n");
  std::printf("Not the Dispatcher: what the models and asio allow one, %zu jobs/run\n\n", o.jobs);
  std::printf("%8s %14s %14s %14s %10s %10s\n", "workers", "bare jobs/s", "book jobs/s", "asio jobs/s", "bare ratio",
              "book ratio");
  for (std::size_t workers : o.workers) {
    std::vector<double> bare, book, asio_rate;
    for (std::size_t r = 0; r < o.reps; ++r) {
      asio_rate.push_back(run_asio_baseline(o.baseline_jobs, o.threads).jobs_per_second());
      const DispatchConfig config{workers, o.capacity, o.jobs, o.threads, {}, 0};
      bare.push_back(run_floor(config, false).jobs_per_second());
      book.push_back(run_floor(config, true).jobs_per_second());
    }
    const double a = median(asio_rate);
    std::printf("%8zu %14.0f %14.0f %14.0f %10.3f %10.3f\n", workers, median(bare), median(book), a,
                median(bare) / a, median(book) / a);
    std::fflush(stdout);
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) try {
  CLI::App app{"blacktree_bench_dispatch: no-op jobs through Dispatcher + WorkerPool vs asio::thread_pool",
               "blacktree_bench_dispatch"};
  Options o;
  add_options(app, o);
  CLI11_PARSE(app, argc, argv);
  std::printf("blacktree_bench_dispatch: %u hardware threads\n", std::thread::hardware_concurrency());
#if !defined(__OPTIMIZE__)
  std::printf("WARNING: built without optimisation; these figures mean nothing (build with Release)\n");
#endif
#if !defined(NDEBUG)
  std::printf("note: assertions are enabled (NDEBUG not defined)\n");
#endif
  std::printf("\n");
  if (o.throughput) throughput(o);
  if (o.floor) floor_table(o);
  if (o.latency) latency(o);
  if (o.health) health(o);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "blacktree_bench_dispatch: %s\n", e.what());
  return 1;
}
