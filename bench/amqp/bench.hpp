// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstddef>
#include <string>

namespace blacktree::bench::amqp {

struct Config {
  std::string url;           ///< amqp://guest:guest@127.0.0.1:<port>/
  int port = 0;              ///< the same port, for the raw client
  std::size_t jobs = 20000;  ///< pre-published persistent jobs per run
  std::size_t window = 8;    ///< prefetch (raw) = free worker slots (blacktree)
  bool sink_batches = true;  ///< blacktree: the dispatcher sends statuses in batches (core::PublishesBatches)
  double rate = 0;           ///< raw loop: at most this many jobs a second (0: as fast as it can)
};

/// Declares `queue` and publishes `n` persistent seed-format jobs to it, confirmed.
void prepublish(const Config& config, const std::string& queue, std::size_t n);

/// Deletes the queues a run used (so repeated runs do not fill the broker).
void delete_queues(const Config& config, const std::string& stem);

/// Consumes `config.jobs` from `queue` (declared if missing) with prefetch
/// `window`, publishing a persistent status to `status_queue` per job (with
/// the job's correlation id, when it has one) and acking each job when its
/// status is confirmed; with `config.rate`, the i-th status goes out no
/// earlier than i / rate seconds after the start. Returns seconds taken.
double run_raw_loop(const Config& config, const std::string& queue, const std::string& status_queue);

/// The same through AmqpJobSource + Dispatcher + AmqpStatusSink, with
/// `window` no-op loopback worker slots. Returns seconds taken.
double run_blacktree(const Config& config, const std::string& queue, const std::string& status_queue);

}  // namespace blacktree::bench::amqp
