// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// How `blacktree submit --wait` and `blacktree logs -f` show a job's progress
// events. On a terminal: the log lines scroll while one live line at the
// bottom shows the phase, a spinner and the elapsed time. Elsewhere (a pipe,
// a CI log): plain lines, which grep and log viewers handle: `[phase] line`
// (tagged), or the job's output lines alone (raw).

#include <blacktree/v1/blacktree.pb.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace blacktree::cli {

class ProgressDisplay {
 public:
  enum class Style {
    live,    ///< `out` is a terminal that understands "\r" and "erase line"
    tagged,  ///< `[phase] line`, and a line for each phase change
    raw,     ///< the job's output lines only
  };

  ProgressDisplay(std::FILE* out, Style style, std::string job_id);

  void on_event(const v1::JobEvent& event);
  /// Redraws the live line (the spinner and the clock move); nothing when not live.
  void tick();
  /// Erases the live line, so what follows starts on a clean line.
  void finish();

  /// Output lines shown so far (without them, the summary shows the result's log tail).
  std::size_t lines_shown() const noexcept { return lines_shown_; }

 private:
  void draw_status();
  void clear_status();

  std::FILE* out_;
  Style style_;
  std::string job_id_;
  std::string phase_ = "queued";  // until the first event: the job waits in the queue for a worker
  std::string worker_id_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  unsigned spinner_ = 0;
  bool status_drawn_ = false;
  std::size_t lines_shown_ = 0;
};

/// "building" for PHASE_BUILDING.
std::string phase_name(v1::Phase phase);

/// `text` without terminal control characters (a build's "\r" progress bars
/// or colour codes would wreck the display); tabs are kept.
std::string printable(std::string_view text);

}  // namespace blacktree::cli
