// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Prometheus metrics for an embedded dispatcher, in the text exposition
// format 0.0.4, with no dependency beyond the core and the standard library:
// serve `render()` at /metrics with whatever HTTP server the program has.
//
//   core::PrometheusMetrics metrics;
//   core::Dispatcher<Q, T, S, core::WorkerPool, core::PrometheusObserver> dispatcher(
//       executor, queue, transport, sink, pool, {}, core::PrometheusObserver{{}, &metrics});
//   ... metrics.render(dispatcher.stats(), pool.snapshot());
//
// Counters come from Dispatcher::stats() and worker gauges from
// WorkerPool::snapshot() at scrape time, so the hot path pays only for the
// two duration histograms, fed from the observer's on_finished. With a
// JobBoard, render_backlog(board.backlog(), now) adds the jobs waiting for a
// worker by labels.

#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/job_board.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace blacktree::core {
namespace prometheus {

namespace detail {
// Backslash and line feed escaped; double quotes too where the text is quoted.
inline std::string escape(std::string_view text, bool quoted) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '"' && quoted) out += "\\\"";
    else out += c;
  }
  return out;
}
}  // namespace detail

/// A label value as the text format wants it: backslash, double quote and
/// line feed escaped.
inline std::string escape_label_value(std::string_view value) { return detail::escape(value, true); }

/// HELP text: backslash and line feed escaped (quotes are literal there).
inline std::string escape_help(std::string_view help) { return detail::escape(help, false); }

/// The shortest text that reads back as `value`: "0.25", "3600" (no ".0"),
/// exponent notation only below 1e-4 or from 1e16 ("1e-05", "1e+16"), and
/// the format's "+Inf", "-Inf", "NaN".
inline std::string format_number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  const double magnitude = std::fabs(value);
  const bool fixed = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16);
  std::array<char, 64> buffer{};
  const auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value,
                                       fixed ? std::chars_format::fixed : std::chars_format::scientific);
  if (ec != std::errc{}) return "NaN";  // unreachable: 64 characters hold any shortest double
  return std::string(buffer.data(), end);
}

/// One label of a sample: name="value".
struct Label {
  std::string_view name;
  std::string_view value;
};

/// Builds one exposition: a family's # HELP and # TYPE lines, then its samples.
class TextWriter {
 public:
  /// `type` is counter, gauge, histogram, summary or untyped.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    append("# HELP ", name, " ", escape_help(help), "\n");
    append("# TYPE ", name, " ", type, "\n");
  }

  void sample(std::string_view name, std::initializer_list<Label> labels, std::string_view value) {
    text_ += name;
    if (labels.size() != 0) {
      text_ += '{';
      bool first = true;
      for (const auto& label : labels) {
        if (!first) text_ += ',';
        first = false;
        append(label.name, "=\"", escape_label_value(label.value), "\"");
      }
      text_ += '}';
    }
    append(" ", value, "\n");
  }
  void sample(std::string_view name, std::initializer_list<Label> labels, std::uint64_t value) {
    sample(name, labels, std::to_string(value));
  }
  void sample(std::string_view name, std::initializer_list<Label> labels, double value) {
    sample(name, labels, format_number(value));
  }

  /// A family of one unlabelled sample.
  void counter(std::string_view name, std::string_view help, std::uint64_t value) {
    family(name, "counter", help);
    sample(name, {}, value);
  }
  void gauge(std::string_view name, std::string_view help, std::uint64_t value) {
    family(name, "gauge", help);
    sample(name, {}, value);
  }

  const std::string& text() const& noexcept { return text_; }
  std::string text() && noexcept { return std::move(text_); }

 private:
  template <class... Parts>
  void append(const Parts&... parts) {
    (text_.append(std::string_view(parts)), ...);
  }

  std::string text_;
};

/// A histogram with fixed upper bounds (ascending); thread-safe.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

  void observe(double value) {
    std::lock_guard lock(mutex_);
    std::size_t i = 0;
    while (i < bounds_.size() && value > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += value;
    ++count_;
  }

  /// _bucket lines with cumulative counts (le="+Inf" last), then _sum and _count.
  void render(TextWriter& out, std::string_view name, std::string_view help) const {
    out.family(name, "histogram", help);
    render_samples(out, name, {});
  }

  /// The samples only, each with `label` (when it has a name) besides le: one
  /// histogram of a labelled family whose HELP and TYPE the caller wrote.
  void render_samples(TextWriter& out, std::string_view name, Label label) const {
    std::lock_guard lock(mutex_);
    const std::string bucket = std::string(name) + "_bucket";
    const std::string sum = std::string(name) + "_sum";
    const std::string count = std::string(name) + "_count";
    const auto write = [&](std::string_view sample, std::string_view le, auto value) {
      if (label.name.empty() && le.empty()) out.sample(sample, {}, value);
      else if (label.name.empty()) out.sample(sample, {{"le", le}}, value);
      else if (le.empty()) out.sample(sample, {label}, value);
      else out.sample(sample, {label, {"le", le}}, value);
    };
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i];
      write(bucket, format_number(bounds_[i]), cumulative);
    }
    write(bucket, "+Inf", count_);
    write(sum, {}, sum_);
    write(count, {}, count_);
  }

 private:
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

}  // namespace prometheus

/// The metrics of one dispatcher and its worker pool (names blacktree_*).
/// Thread-safe: the observer feeds it on the dispatcher's strand while a
/// scrape renders it from the HTTP server's thread.
class PrometheusMetrics {
 public:
  /// Feeds the duration histograms from a final status's timestamps.
  void observe(const JobResult& result) {
    using namespace std::chrono;
    const system_clock::time_point unset{};
    if (result.received_at != unset && result.started_at != unset) {
      queue_wait_.observe(duration<double>(result.started_at - result.received_at).count());
    }
    if (result.started_at != unset && result.finished_at != unset) {
      run_duration_.observe(duration<double>(result.finished_at - result.started_at).count());
    }
  }

  /// A progress event the embedder's events path had no room for.
  void count_event_dropped() noexcept { events_dropped_.fetch_add(1, std::memory_order_relaxed); }
  std::uint64_t events_dropped() const noexcept { return events_dropped_.load(std::memory_order_relaxed); }

  std::string render(const DispatcherStats& s, const std::vector<WorkerSnapshot>& workers) const {
    prometheus::TextWriter out;
    out.counter("blacktree_jobs_received_total", "Jobs taken from the queue.", s.received);
    out.counter("blacktree_jobs_succeeded_total", "Jobs whose final status was success.", s.succeeded);
    out.counter("blacktree_jobs_failed_total", "Jobs whose final status was failure (lost and invalid included).",
                s.failed);
    out.counter("blacktree_jobs_lost_total", "Jobs whose worker went away while running them.", s.lost);
    out.counter("blacktree_jobs_dead_lettered_total", "Invalid messages dead-lettered with a reason.",
                s.dead_lettered);
    out.counter("blacktree_jobs_cancelled_total", "Jobs whose final status says cancelled (counted as failed too).",
                s.cancelled);
    out.counter("blacktree_jobs_handed_back_total", "Jobs requeued by a graceful stop.", s.handed_back);
    out.counter("blacktree_offers_not_accepted_total", "Offers a worker refused or never saw.", s.not_accepted);
    out.counter("blacktree_job_duplicates_total",
                "Deliveries of a job id in flight or recently finished, settled without running again.",
                s.duplicates);
    out.counter("blacktree_jobs_adopted_total",
                "Deliveries sent to the worker that carried their run from before, which attached to it.", s.adopted);
    out.counter("blacktree_jobs_settled_elsewhere_total",
                "Redeliveries acked without running: another dispatcher on the queue ran the job and published its "
                "status.",
                s.settled_elsewhere);
    out.counter("blacktree_jobs_passed_back_total",
                "Redeliveries put back in the queue to reach the dispatcher whose worker carries their run.",
                s.passed_back);
    out.counter("blacktree_events_dropped_total", "Progress events dropped because the events path was full.",
                events_dropped());
    out.gauge("blacktree_jobs_in_flight", "Jobs taken and not yet settled.", s.in_flight);
    queue_wait_.render(out, "blacktree_job_queue_wait_seconds", "From receipt to a worker accepting the job.");
    run_duration_.render(out, "blacktree_job_run_duration_seconds", "From a worker accepting the job to its result.");

    constexpr std::array states{WorkerState::registering, WorkerState::free, WorkerState::busy,
                                WorkerState::draining, WorkerState::dead};
    std::array<std::uint64_t, states.size()> by_state{};
    std::uint64_t slots = 0;
    std::uint64_t busy = 0;
    for (const auto& w : workers) {
      ++by_state[static_cast<std::size_t>(w.state)];
      if (w.info && (w.state == WorkerState::free || w.state == WorkerState::busy)) slots += w.info->capacity;
      busy += w.in_use;
    }
    out.family("blacktree_workers", "gauge", "Registered workers by state.");
    for (const auto state : states) {
      out.sample("blacktree_workers", {{"state", to_string(state)}}, by_state[static_cast<std::size_t>(state)]);
    }
    out.gauge("blacktree_worker_slots", "Job slots of live workers.", slots);
    out.gauge("blacktree_worker_slots_busy", "Job slots in use.", busy);
    return std::move(out).text();
  }

 private:
  prometheus::Histogram queue_wait_{{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900}};
  prometheus::Histogram run_duration_{{0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}};
  std::atomic<std::uint64_t> events_dropped_{0};
};

/// A Backlog's labels as one label value: "pool=a,region=eu" (sorted by key),
/// "(any)" for jobs that require none.
inline std::string backlog_label(const Labels& labels) {
  if (labels.empty()) return "(any)";
  std::string out;
  for (const auto& [key, value] : labels) {
    if (!out.empty()) out += ',';
    out += key;
    out += '=';
    out += value;
  }
  return out;
}

/// The jobs waiting for a worker by the labels they require (JobBoard::backlog()
/// at scrape time): blacktree_jobs_waiting{labels="pool=a,region=eu"} (how
/// many) and blacktree_job_oldest_waiting_seconds{labels=...} (the longest
/// wait among them, from receipt to `now`). The label sets are the jobs'
/// input, so there are at most `max_label_sets` of them: those with the most
/// jobs (then the longest wait); the rest are summed under labels="(other)"
/// (their count, and the longest wait of all of them). Samples are sorted by
/// label value; with nothing waiting, the families have no samples.
inline std::string render_backlog(const std::vector<Backlog>& backlog, std::chrono::system_clock::time_point now,
                                  std::size_t max_label_sets = 50) {
  struct Row {
    std::string labels;
    std::size_t jobs = 0;
    std::chrono::system_clock::time_point oldest{};
  };
  std::vector<Row> rows;
  rows.reserve(backlog.size());
  for (const auto& b : backlog) {
    if (b.jobs == 0) continue;
    rows.push_back({backlog_label(b.labels), b.jobs, b.oldest});
  }
  if (rows.size() > max_label_sets) {
    std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
      if (a.jobs != b.jobs) return a.jobs > b.jobs;
      if (a.oldest != b.oldest) return a.oldest < b.oldest;
      return a.labels < b.labels;
    });
    Row other{"(other)", 0, rows[max_label_sets].oldest};
    for (auto it = rows.begin() + static_cast<std::ptrdiff_t>(max_label_sets); it != rows.end(); ++it) {
      other.jobs += it->jobs;
      other.oldest = std::min(other.oldest, it->oldest);
    }
    rows.resize(max_label_sets);
    rows.push_back(std::move(other));
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.labels < b.labels; });

  prometheus::TextWriter out;
  out.family("blacktree_jobs_waiting", "gauge", "Jobs waiting for a worker, by the labels they require.");
  for (const auto& row : rows) {
    out.sample("blacktree_jobs_waiting", {{"labels", row.labels}}, static_cast<std::uint64_t>(row.jobs));
  }
  out.family("blacktree_job_oldest_waiting_seconds", "gauge",
             "How long the longest-waiting job of those labels has waited for a worker.");
  for (const auto& row : rows) {
    const double waited = std::max(0.0, std::chrono::duration<double>(now - row.oldest).count());
    out.sample("blacktree_job_oldest_waiting_seconds", {{"labels", row.labels}}, waited);
  }
  return std::move(out).text();
}

/// A Dispatcher observer that feeds PrometheusMetrics; the metrics outlive
/// the dispatcher. To log as well, derive from it and call its on_finished
/// from yours.
struct PrometheusObserver : DispatcherObserver {
  PrometheusMetrics* metrics = nullptr;

  void on_finished(const Job&, const JobResult& result) {
    if (metrics) metrics->observe(result);
  }
};

}  // namespace blacktree::core
