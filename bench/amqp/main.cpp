// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// blacktree_bench_amqp [--jobs N] [--window W] [--reps R]
// blacktree_bench_amqp --queue Q --status-queue S [--jobs N] [--window W] [--rate R]
//
// Jobs/s of a raw rabbitmq-c loop (consume, publish a confirmed persistent
// status, ack on the confirm) and of blacktree's AMQP source + Dispatcher +
// status sink doing the same with no-op workers, against the same broker in
// the same run, and their ratio. Uses MQ_URL if set, else starts a private
// broker with tests/support/rabbitmq.sh (and stops it at the end).
//
// With --queue, only the raw loop runs, once, on the named queues as jobs
// arrive in them (nothing pre-published, nothing deleted): the baseline of
// bench/e2e/run.py's light-load latency phase, which publishes the jobs, and
// of its broker CPU figures (--rate paces it to the end-to-end run's rate).

#include "bench.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sys/resource.h>
#include <unistd.h>
#include <fstream>
#include <string>
#include <vector>

namespace {

using namespace blacktree::bench::amqp;

int port_of(const std::string& url) {
  const auto colon = url.rfind(':');
  return colon == std::string::npos ? 5672 : std::atoi(url.c_str() + colon + 1);
}

// CPU seconds (user + system) this process has used so far, all threads.
double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  std::size_t reps = 3;
  CLI::App app{"blacktree_bench_amqp: a raw rabbitmq-c loop vs AmqpJobSource + Dispatcher + AmqpStatusSink",
               "blacktree_bench_amqp"};
  app.add_option("--jobs", config.jobs, "jobs per measurement")->capture_default_str();
  app.add_option("--window", config.window, "jobs in flight")->capture_default_str();
  app.add_option("--reps", reps, "measurements per figure; the median is reported")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--sink-batches,!--no-sink-batches", config.sink_batches,
               "blacktree: statuses in batches (default), or one publish call per status")
      ->capture_default_str();
  std::string queue, status_queue;
  app.add_option("--queue", queue, "run the raw loop alone on this job queue, as jobs arrive in it");
  app.add_option("--status-queue", status_queue, "with --queue: where its statuses go")->needs("--queue");
  app.add_option("--rate", config.rate, "with --queue: at most this many jobs a second (0: as fast as it can)")
      ->check(CLI::NonNegativeNumber)
      ->needs("--queue");
  CLI11_PARSE(app, argc, argv);
  if (!queue.empty() && status_queue.empty()) {
    std::fprintf(stderr, "--status-queue: required with --queue\n");
    return 2;
  }

  std::string broker_dir;
  if (const char* url = std::getenv("MQ_URL"); url && *url) {
    config.url = url;
  } else {
    broker_dir = "/tmp/blacktree-bench-amqp-" + std::to_string(::getpid());
    const std::string start = std::string(BLACKTREE_RABBITMQ_SH) + " start " + broker_dir;
    std::fprintf(stderr, "starting a broker: %s\n", start.c_str());
    if (std::system(start.c_str()) != 0) return 1;
    std::ifstream url_file(broker_dir + "/url");
    std::getline(url_file, config.url);
  }
  config.port = port_of(config.url.substr(0, config.url.size() - 1));

  int rc = 0;
  try {
    if (!queue.empty()) {
      const double seconds = run_raw_loop(config, queue, status_queue);
      std::printf("raw loop: %zu jobs in %.3f s\n", config.jobs, seconds);
    } else {
      std::vector<double> raw, ours, raw_cpu, ours_cpu;  // jobs/s; CPU us per job of this process
      for (std::size_t r = 0; r < reps; ++r) {
        const std::string stem = "bench." + std::to_string(::getpid()) + "." + std::to_string(r);
        // Alternate the two, each on a fresh pre-filled queue, so load changes hit both.
        prepublish(config, stem + ".raw.execute", config.jobs);
        const double per_job = 1e6 / static_cast<double>(config.jobs);
        double cpu = cpu_seconds();
        raw.push_back(config.jobs / run_raw_loop(config, stem + ".raw.execute", stem + ".raw.status"));
        raw_cpu.push_back((cpu_seconds() - cpu) * per_job);
        prepublish(config, stem + ".bt.execute", config.jobs);
        cpu = cpu_seconds();
        ours.push_back(config.jobs / run_blacktree(config, stem + ".bt.execute", stem + ".bt.status"));
        ours_cpu.push_back((cpu_seconds() - cpu) * per_job);
        delete_queues(config, stem);
        std::printf("rep %zu: raw rabbitmq-c %.0f jobs/s (%.0f us CPU/job), blacktree %.0f jobs/s (%.0f us CPU/job)\n",
                    r + 1, raw.back(), raw_cpu.back(), ours.back(), ours_cpu.back());
      }
      const double raw_median = median(raw), ours_median = median(ours);
      std::printf("\n%zu persistent jobs, window %zu, median of %zu\n", config.jobs, config.window, reps);
      std::printf("  raw rabbitmq-c loop        %8.0f jobs/s   %5.0f us CPU/job\n", raw_median, median(raw_cpu));
      std::printf("  blacktree source+sink      %5.0f us CPU/job\n", median(ours_cpu));
      std::printf("  blacktree source+sink      %8.0f jobs/s   %.2fx the raw loop (target >= 0.8x: %s)\n", ours_median,
                  ours_median / raw_median, ours_median / raw_median >= 0.8 ? "PASS" : "MISS");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench failed: %s\n", e.what());
    rc = 1;
  }
  if (!broker_dir.empty()) {
    const std::string stop = std::string(BLACKTREE_RABBITMQ_SH) + " stop " + broker_dir + " && rm -rf " + broker_dir;
    if (std::system(stop.c_str()) != 0) rc = 1;
  }
  return rc;
}
