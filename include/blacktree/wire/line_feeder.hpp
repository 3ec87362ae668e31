// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// LineFeeder: lines from a file descriptor (a pipe, stdin, a socket) on a
// thread of its own, for a source that a program feeds by writing lines, such
// as the orchestrator's `--queue stdio` (JobRequest JSON lines into a
// core::InMemoryQueue: job_request_lines).
//
// It waits in poll() on the descriptor and on an eventfd of its own, so
// stop() returns at once even while no input comes; it never polls in a loop.

#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/result.hpp>

#include <functional>
#include <memory>
#include <string>

namespace blacktree::wire {

class LineFeeder {
 public:
  /// Gets each line without its '\n' (a '\r' before it stays); lines of only
  /// spaces, tabs and '\r' are skipped. Runs on the feeder's thread.
  using LineHandler = std::function<void(std::string line)>;
  /// Runs on the feeder's thread when input ends: end of file, or a read
  /// error. Not after stop(). A last line without '\n' is not handed over: a
  /// writer that died mid-line did not finish that message.
  using EndHandler = std::function<void()>;

  /// Reads `fd` (not owned: it must stay open until stop() or the end).
  LineFeeder(int fd, LineHandler on_line, EndHandler on_end = {});
  LineFeeder(const LineFeeder&) = delete;
  LineFeeder& operator=(const LineFeeder&) = delete;
  ~LineFeeder();  ///< stop()

  /// Starts the thread; an error when the wake-up descriptor cannot be made
  /// (out of file descriptors) or when already started.
  core::Result<void> start();
  /// Stops reading and joins the thread; lines already handed over stay
  /// handed over. Idempotent.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The handler of `--queue stdio`: each line a JobRequest JSON; a valid one is
/// published to `queue`, an invalid one published as invalid with the reason
/// (so it gets a failure status when it has a jobId, and is dead-lettered).
LineFeeder::LineHandler job_request_lines(core::InMemoryQueue& queue);

}  // namespace blacktree::wire
