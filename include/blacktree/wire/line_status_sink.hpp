// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// LineStatusSink: the status side of a broker-less setup such as the
// orchestrator's `--queue stdio` (LineFeeder is the job side). Each status is
// one JobResponse JSON line written to a file descriptor (stdout, a pipe, a
// file); it is confirmed once the whole line has been written, and fails with
// the system's error when it cannot be. Nothing is durable beyond what the
// reader of the descriptor makes of it.

#include <blacktree/core/concepts.hpp>
#include <blacktree/core/job.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/post.hpp>

#include <functional>
#include <mutex>
#include <system_error>
#include <utility>

namespace blacktree::wire {

class LineStatusSink {
 public:
  /// Writes to `fd` (not owned: it must stay open while the sink is used).
  LineStatusSink(asio::any_io_executor executor, int fd) : executor_(std::move(executor)), fd_(fd) {}
  LineStatusSink(const LineStatusSink&) = delete;
  LineStatusSink& operator=(const LineStatusSink&) = delete;

  /// Completes with no error once the line is written, on the handler's
  /// associated executor (the sink's by default), never inside this call.
  template <class Token>
  auto async_publish(const core::JobResult& result, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this](auto handler, const core::JobResult& r) {
          const std::error_code ec = write_line(r);
          auto executor = asio::get_associated_executor(handler, executor_);
          asio::post(executor, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
        },
        token, std::cref(result));
  }

 private:
  /// The whole line or an error; lines of concurrent publishes never interleave.
  std::error_code write_line(const core::JobResult& result);

  asio::any_io_executor executor_;
  int fd_;
  std::mutex mutex_;
};

static_assert(core::StatusSink<LineStatusSink>);

}  // namespace blacktree::wire
