// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// `--queue stdio`: the orchestrator without a broker. JobRequest JSON lines on
// standard input feed the core's in-memory queue (wire::LineFeeder with
// wire::job_request_lines); JobResponse JSON lines go to standard output. For
// local use, scripting and tests; nothing is durable beyond the process.

#include <blacktree/core/in_memory.hpp>
#include <blacktree/wire/wire.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/post.hpp>

#include <cstdio>
#include <mutex>
#include <string>

namespace blacktree::orchestrator {

/// Writes each status as one JobResponse JSON line to stdout; "durable" once flushed.
class StdoutStatusSink {
 public:
  explicit StdoutStatusSink(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  template <class Token>
  auto async_publish(const core::JobResult& result, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code)>(
        [this, &result](auto handler) {
          std::error_code ec;
          {
            std::lock_guard lock(mutex_);
            const auto line = wire::job_response_json(result) + "\n";
            if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size() || std::fflush(stdout) != 0) {
              ec = std::make_error_code(std::errc::io_error);
            }
          }
          auto executor = asio::get_associated_executor(handler, executor_);
          asio::post(executor, [h = std::move(handler), ec]() mutable { std::move(h)(ec); });
        },
        token);
  }

 private:
  asio::any_io_executor executor_;
  std::mutex mutex_;
};

static_assert(core::StatusSink<StdoutStatusSink>);

}  // namespace blacktree::orchestrator
