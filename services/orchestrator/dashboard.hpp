// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The orchestrator's web page, on its HTTP port beside /healthz and /metrics:
//   /                   workers, jobs in flight, the backlog by labels, the
//                       last finished jobs, totals and rates (refreshes itself)
//   /jobs/ID            one job and the newest lines of its output; with
//                       JavaScript, later lines as they arrive
//   /jobs/ID/events     those lines as server-sent events (?from=N), then `end`
//   POST /jobs/ID/cancel  only with an admin token configured, and given
// Everything it serves is its own: no file from elsewhere, a strict
// Content-Security-Policy. Read-only unless an admin token is set.

#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/job_board.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <functional>
#include <string>
#include <vector>

namespace httplib {
class Server;
}

namespace blacktree::service {

struct DashboardSource {
  const core::JobBoard* board = nullptr;
  std::function<std::vector<core::WorkerSnapshot>()> workers;
  std::function<core::DispatcherStats()> stats;
  /// Asks the dispatcher to cancel a job and calls `done` with what it found
  /// (any thread); false when no dispatcher takes cancels (it is stopping).
  std::function<bool(std::string job_id, std::string reason, std::function<void(core::CancelOutcome)> done)> cancel;
  /// What waits in the broker's queue, in words ("12 jobs ready in
  /// execute.queue ..."); empty function: not shown (no broker).
  std::function<std::string()> queue;
  std::string admin_token;  ///< empty: the page is read-only
  std::string title;        ///< e.g. the orchestrator's id and version
  std::size_t max_streams = 8;  ///< live log tails served at once; more get 503
};

/// Adds the dashboard's routes to `server` (before it listens). `source`'s
/// functions are called from the server's threads.
void add_dashboard(httplib::Server& server, DashboardSource source);

}  // namespace blacktree::service
