// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0

#include <blacktree/core/prometheus.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace core = blacktree::core;
namespace prometheus = blacktree::core::prometheus;
using namespace std::chrono_literals;

TEST_CASE("prometheus: label values escape backslash, double quote and line feed", "[prometheus]") {
  CHECK(prometheus::escape_label_value("plain-value_1.2") == "plain-value_1.2");
  CHECK(prometheus::escape_label_value(R"(a"b)") == R"(a\"b)");
  CHECK(prometheus::escape_label_value(R"(C:\dir)") == R"(C:\\dir)");
  CHECK(prometheus::escape_label_value("two\nlines") == R"(two\nlines)");
  CHECK(prometheus::escape_label_value("tab\tstays") == "tab\tstays");
  CHECK(prometheus::escape_label_value("") == "");
}

TEST_CASE("prometheus: HELP text escapes backslash and line feed but not quotes", "[prometheus]") {
  CHECK(prometheus::escape_help(R"(say "hi" \ bye)") == R"(say "hi" \\ bye)");
  CHECK(prometheus::escape_help("one\ntwo") == R"(one\ntwo)");
}

TEST_CASE("prometheus: numbers are the shortest text that reads back", "[prometheus]") {
  CHECK(prometheus::format_number(0) == "0");
  CHECK(prometheus::format_number(1) == "1");
  CHECK(prometheus::format_number(3600) == "3600");
  CHECK(prometheus::format_number(0.01) == "0.01");
  CHECK(prometheus::format_number(0.1 + 0.2) == "0.30000000000000004");
  CHECK(prometheus::format_number(7242.5) == "7242.5");
  CHECK(prometheus::format_number(-2.5) == "-2.5");
  CHECK(prometheus::format_number(1e-5) == "1e-05");
  CHECK(prometheus::format_number(1e16) == "1e+16");
  CHECK(prometheus::format_number(1e15) == "1000000000000000");
  CHECK(prometheus::format_number(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(prometheus::format_number(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(prometheus::format_number(std::numeric_limits<double>::quiet_NaN()) == "NaN");
}

TEST_CASE("prometheus: a family is its HELP and TYPE lines, then its samples", "[prometheus]") {
  prometheus::TextWriter out;
  out.counter("requests_total", "Requests\nserved.", std::uint64_t{42});
  out.family("temperature", "gauge", "Degrees by room.");
  out.sample("temperature", {{"room", "hall"}, {"door", R"(a "b" \c)"}}, 21.5);
  out.sample("temperature", {{"room", "line\nfeed"}}, std::uint64_t{3});
  out.gauge("up", "One when up.", std::uint64_t{1});
  CHECK(out.text() ==
        "# HELP requests_total Requests\\nserved.\n"
        "# TYPE requests_total counter\n"
        "requests_total 42\n"
        "# HELP temperature Degrees by room.\n"
        "# TYPE temperature gauge\n"
        "temperature{room=\"hall\",door=\"a \\\"b\\\" \\\\c\"} 21.5\n"
        "temperature{room=\"line\\nfeed\"} 3\n"
        "# HELP up One when up.\n"
        "# TYPE up gauge\n"
        "up 1\n");
}

TEST_CASE("prometheus: a histogram has cumulative buckets, +Inf, sum and count", "[prometheus]") {
  prometheus::Histogram histogram({0.5, 1, 10});
  for (double v : {0.1, 0.5, 0.75, 2.0, 100.0}) histogram.observe(v);
  prometheus::TextWriter out;
  histogram.render(out, "latency_seconds", "How long.");
  CHECK(out.text() ==
        "# HELP latency_seconds How long.\n"
        "# TYPE latency_seconds histogram\n"
        "latency_seconds_bucket{le=\"0.5\"} 2\n"  // an observation on a bound counts in its bucket
        "latency_seconds_bucket{le=\"1\"} 3\n"
        "latency_seconds_bucket{le=\"10\"} 4\n"
        "latency_seconds_bucket{le=\"+Inf\"} 5\n"
        "latency_seconds_sum 103.35\n"
        "latency_seconds_count 5\n");

  prometheus::Histogram empty({1});
  prometheus::TextWriter none;
  empty.render(none, "h", "Empty.");
  CHECK(none.text() == "# HELP h Empty.\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n");

  // One histogram of a labelled family: the label on every sample, before le.
  prometheus::TextWriter labelled;
  histogram.render_samples(labelled, "stage_seconds", {"stage", "building"});
  CHECK_THAT(labelled.text(), Catch::StartsWith("stage_seconds_bucket{stage=\"building\",le=\"0.5\"} 2\n"));
  CHECK_THAT(labelled.text(), Catch::EndsWith("stage_seconds_sum{stage=\"building\"} 103.35\n"
                                              "stage_seconds_count{stage=\"building\"} 5\n"));
}

namespace {

core::JobResult timed_result(std::chrono::milliseconds waited, std::chrono::milliseconds ran) {
  core::JobResult result;
  result.received_at = std::chrono::system_clock::time_point{} + std::chrono::hours(1000);
  result.started_at = result.received_at + waited;
  result.finished_at = result.started_at + ran;
  return result;
}

std::shared_ptr<const core::WorkerInfo> worker(std::string id, std::uint32_t capacity) {
  auto info = std::make_shared<core::WorkerInfo>();
  info->id = std::move(id);
  info->capacity = capacity;
  return info;
}

}  // namespace

// The orchestrator's /metrics, byte for byte: dashboards and alerts depend on these names.
TEST_CASE("prometheus: PrometheusMetrics renders the dispatcher's and the pool's metrics", "[prometheus]") {
  core::PrometheusMetrics metrics;
  core::PrometheusObserver observer;
  observer.metrics = &metrics;
  observer.on_finished(core::Job{}, timed_result(250ms, 42500ms));
  observer.on_finished(core::Job{}, timed_result(250ms, 2h));
  observer.on_finished(core::Job{}, core::JobResult{});  // never started: no durations to observe
  for (int i = 0; i < 3; ++i) metrics.count_event_dropped();
  CHECK(metrics.events_dropped() == 3);

  core::DispatcherStats stats;
  stats.received = 10;
  stats.succeeded = 6;
  stats.failed = 3;
  stats.lost = 1;
  stats.dead_lettered = 1;
  stats.handed_back = 2;
  stats.not_accepted = 4;
  stats.in_flight = 1;
  stats.duplicates = 5;
  stats.cancelled = 2;
  stats.adopted = 7;
  stats.settled_elsewhere = 8;
  stats.passed_back = 9;
  std::vector<core::WorkerSnapshot> workers;
  workers.push_back({worker("a", 2), core::WorkerState::busy, 2, 0, {}});
  workers.push_back({worker("b", 3), core::WorkerState::free, 1, 0, {}});
  workers.push_back({worker("c", 5), core::WorkerState::dead, 0, 0, {}});

  CHECK(metrics.render(stats, workers) ==
      "# HELP blacktree_jobs_received_total Jobs taken from the queue.\n"
      "# TYPE blacktree_jobs_received_total counter\n"
      "blacktree_jobs_received_total 10\n"
      "# HELP blacktree_jobs_succeeded_total Jobs whose final status was success.\n"
      "# TYPE blacktree_jobs_succeeded_total counter\n"
      "blacktree_jobs_succeeded_total 6\n"
      "# HELP blacktree_jobs_failed_total Jobs whose final status was failure (lost and invalid included).\n"
      "# TYPE blacktree_jobs_failed_total counter\n"
      "blacktree_jobs_failed_total 3\n"
      "# HELP blacktree_jobs_lost_total Jobs whose worker went away while running them.\n"
      "# TYPE blacktree_jobs_lost_total counter\n"
      "blacktree_jobs_lost_total 1\n"
      "# HELP blacktree_jobs_dead_lettered_total Invalid messages dead-lettered with a reason.\n"
      "# TYPE blacktree_jobs_dead_lettered_total counter\n"
      "blacktree_jobs_dead_lettered_total 1\n"
      "# HELP blacktree_jobs_cancelled_total Jobs whose final status says cancelled (counted as failed too).\n"
      "# TYPE blacktree_jobs_cancelled_total counter\n"
      "blacktree_jobs_cancelled_total 2\n"
      "# HELP blacktree_jobs_handed_back_total Jobs requeued by a graceful stop.\n"
      "# TYPE blacktree_jobs_handed_back_total counter\n"
      "blacktree_jobs_handed_back_total 2\n"
      "# HELP blacktree_offers_not_accepted_total Offers a worker refused or never saw.\n"
      "# TYPE blacktree_offers_not_accepted_total counter\n"
      "blacktree_offers_not_accepted_total 4\n"
      "# HELP blacktree_job_duplicates_total Deliveries of a job id in flight or recently finished, settled without "
      "running again.\n"
      "# TYPE blacktree_job_duplicates_total counter\n"
      "blacktree_job_duplicates_total 5\n"
      "# HELP blacktree_jobs_adopted_total Deliveries sent to the worker that carried their run from before, which "
      "attached to it.\n"
      "# TYPE blacktree_jobs_adopted_total counter\n"
      "blacktree_jobs_adopted_total 7\n"
      "# HELP blacktree_jobs_settled_elsewhere_total Redeliveries acked without running: another dispatcher on the "
      "queue ran the job and published its status.\n"
      "# TYPE blacktree_jobs_settled_elsewhere_total counter\n"
      "blacktree_jobs_settled_elsewhere_total 8\n"
      "# HELP blacktree_jobs_passed_back_total Redeliveries put back in the queue to reach the dispatcher whose "
      "worker carries their run.\n"
      "# TYPE blacktree_jobs_passed_back_total counter\n"
      "blacktree_jobs_passed_back_total 9\n"
      "# HELP blacktree_events_dropped_total Progress events dropped because the events path was full.\n"
      "# TYPE blacktree_events_dropped_total counter\n"
      "blacktree_events_dropped_total 3\n"
      "# HELP blacktree_jobs_in_flight Jobs taken and not yet settled.\n"
      "# TYPE blacktree_jobs_in_flight gauge\n"
      "blacktree_jobs_in_flight 1\n"
      "# HELP blacktree_job_queue_wait_seconds From receipt to a worker accepting the job.\n"
      "# TYPE blacktree_job_queue_wait_seconds histogram\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"0.01\"} 0\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"0.05\"} 0\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"0.1\"} 0\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"0.5\"} 2\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"1\"} 2\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"5\"} 2\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"10\"} 2\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"30\"} 2\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"60\"} 2\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"300\"} 2\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"900\"} 2\n"
      "blacktree_job_queue_wait_seconds_bucket{le=\"+Inf\"} 2\n"
      "blacktree_job_queue_wait_seconds_sum 0.5\n"
      "blacktree_job_queue_wait_seconds_count 2\n"
      "# HELP blacktree_job_run_duration_seconds From a worker accepting the job to its result.\n"
      "# TYPE blacktree_job_run_duration_seconds histogram\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"0.1\"} 0\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"0.5\"} 0\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"1\"} 0\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"5\"} 0\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"10\"} 0\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"30\"} 0\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"60\"} 1\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"120\"} 1\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"300\"} 1\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"600\"} 1\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"1800\"} 1\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"3600\"} 1\n"
      "blacktree_job_run_duration_seconds_bucket{le=\"+Inf\"} 2\n"
      "blacktree_job_run_duration_seconds_sum 7242.5\n"
      "blacktree_job_run_duration_seconds_count 2\n"
      "# HELP blacktree_workers Registered workers by state.\n"
      "# TYPE blacktree_workers gauge\n"
      "blacktree_workers{state=\"registering\"} 0\n"
      "blacktree_workers{state=\"free\"} 1\n"
      "blacktree_workers{state=\"busy\"} 1\n"
      "blacktree_workers{state=\"draining\"} 0\n"
      "blacktree_workers{state=\"dead\"} 1\n"
      "# HELP blacktree_worker_slots Job slots of live workers.\n"
      "# TYPE blacktree_worker_slots gauge\n"
      "blacktree_worker_slots 5\n"
      "# HELP blacktree_worker_slots_busy Job slots in use.\n"
      "# TYPE blacktree_worker_slots_busy gauge\n"
      "blacktree_worker_slots_busy 3\n");
}

TEST_CASE("prometheus: PrometheusMetrics may be fed and scraped from different threads", "[prometheus]") {
  core::PrometheusMetrics metrics;
  std::thread feeder([&] {
    for (int i = 0; i < 1000; ++i) {
      metrics.observe(timed_result(10ms, 20ms));
      metrics.count_event_dropped();
    }
  });
  for (int i = 0; i < 100; ++i) CHECK_FALSE(metrics.render({}, {}).empty());
  feeder.join();
  const auto text = metrics.render({}, {});
  CHECK_THAT(text, Catch::Contains("blacktree_job_run_duration_seconds_count 1000\n"));
  CHECK_THAT(text, Catch::Contains("blacktree_events_dropped_total 1000\n"));
}

namespace {
core::Backlog waiting(core::Labels labels, std::size_t jobs, std::chrono::system_clock::time_point oldest) {
  core::Backlog b;
  b.labels = std::move(labels);
  b.jobs = jobs;
  b.oldest = oldest;
  return b;
}
}  // namespace

TEST_CASE("prometheus: the backlog by labels is two gauges, one sample per label set", "[prometheus]") {
  const auto now = std::chrono::system_clock::time_point(std::chrono::hours(24 * 365 * 56));
  const std::vector<core::Backlog> backlog{
      waiting({{"region", "eu"}, {"pool", "a"}}, 3, now - 90s),
      waiting({}, 1, now - 250ms),
      waiting({{"region", "mars"}}, 2, now - 7s),
  };
  CHECK(core::render_backlog(backlog, now) ==
        "# HELP blacktree_jobs_waiting Jobs waiting for a worker, by the labels they require.\n"
        "# TYPE blacktree_jobs_waiting gauge\n"
        "blacktree_jobs_waiting{labels=\"(any)\"} 1\n"
        "blacktree_jobs_waiting{labels=\"pool=a,region=eu\"} 3\n"
        "blacktree_jobs_waiting{labels=\"region=mars\"} 2\n"
        "# HELP blacktree_job_oldest_waiting_seconds How long the longest-waiting job of those labels has waited "
        "for a worker.\n"
        "# TYPE blacktree_job_oldest_waiting_seconds gauge\n"
        "blacktree_job_oldest_waiting_seconds{labels=\"(any)\"} 0.25\n"
        "blacktree_job_oldest_waiting_seconds{labels=\"pool=a,region=eu\"} 90\n"
        "blacktree_job_oldest_waiting_seconds{labels=\"region=mars\"} 7\n");
}

TEST_CASE("prometheus: with nothing waiting the backlog families have no samples", "[prometheus]") {
  const auto text = core::render_backlog({}, std::chrono::system_clock::now());
  CHECK(text ==
        "# HELP blacktree_jobs_waiting Jobs waiting for a worker, by the labels they require.\n"
        "# TYPE blacktree_jobs_waiting gauge\n"
        "# HELP blacktree_job_oldest_waiting_seconds How long the longest-waiting job of those labels has waited "
        "for a worker.\n"
        "# TYPE blacktree_job_oldest_waiting_seconds gauge\n");
}

TEST_CASE("prometheus: backlog label values escape quotes, backslashes and line feeds", "[prometheus]") {
  const auto now = std::chrono::system_clock::now();
  const auto text = core::render_backlog({waiting({{"team", R"(a "b" \c)"}, {"note", "x\ny"}}, 1, now)}, now);
  CHECK_THAT(text, Catch::Contains(R"(blacktree_jobs_waiting{labels="note=x\ny,team=a \"b\" \\c"} 1)"
                                   "\n"));
  CHECK_THAT(text, Catch::Contains(R"(blacktree_job_oldest_waiting_seconds{labels="note=x\ny,team=a \"b\" \\c"} 0)"
                                   "\n"));
}

TEST_CASE("prometheus: a clock behind the oldest receipt reports 0 s, not a negative wait", "[prometheus]") {
  const auto now = std::chrono::system_clock::now();
  CHECK_THAT(core::render_backlog({waiting({{"a", "b"}}, 1, now + 5s)}, now),
             Catch::Contains("blacktree_job_oldest_waiting_seconds{labels=\"a=b\"} 0\n"));
}

TEST_CASE("prometheus: past the label-set bound, the smallest backlogs are summed under (other)", "[prometheus]") {
  const auto now = std::chrono::system_clock::time_point(std::chrono::hours(24 * 365 * 56));
  std::vector<core::Backlog> backlog;
  // 60 label sets: id=00..59, id=i holding i+1 jobs, received i seconds ago.
  for (int i = 0; i < 60; ++i) {
    backlog.push_back(waiting({{"id", (i < 10 ? "0" : "") + std::to_string(i)}}, static_cast<std::size_t>(i + 1),
                              now - std::chrono::seconds(i)));
  }
  const auto text = core::render_backlog(backlog, now, 50);
  std::size_t samples = 0;
  for (std::size_t at = 0; (at = text.find("\nblacktree_jobs_waiting{", at)) != std::string::npos; ++at) ++samples;
  CHECK(samples == 51);  // the 50 largest and (other)
  // The 10 smallest (id=00..09: 1+2+...+10 jobs) are (other); the oldest of them waited 9 s.
  CHECK_THAT(text, Catch::Contains("blacktree_jobs_waiting{labels=\"(other)\"} 55\n"));
  CHECK_THAT(text, Catch::Contains("blacktree_job_oldest_waiting_seconds{labels=\"(other)\"} 9\n"));
  CHECK_THAT(text, Catch::Contains("blacktree_jobs_waiting{labels=\"id=10\"} 11\n"));
  CHECK_THAT(text, Catch::Contains("blacktree_jobs_waiting{labels=\"id=59\"} 60\n"));
  CHECK_THAT(text, !Catch::Contains("labels=\"id=09\""));
  // At the bound exactly, nothing is summed.
  backlog.resize(50);
  CHECK_THAT(core::render_backlog(backlog, now, 50), !Catch::Contains("(other)"));
}
