// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// `--queue stdio`: the orchestrator without a broker. JobRequest JSON lines on
// standard input feed the core's in-memory queue; JobResponse JSON lines go to
// standard output. For local use, scripting and tests; nothing is durable
// beyond the process.

#include <blacktree/core/in_memory.hpp>
#include <blacktree/wire/wire.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/post.hpp>

#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace blacktree::orchestrator {

/// Reads stdin line by line into an InMemoryQueue until EOF or stop().
/// Waits with poll() on stdin and an eventfd, so stop() never waits for input.
class StdinFeeder {
 public:
  explicit StdinFeeder(core::InMemoryQueue& queue) : queue_(queue), wake_(::eventfd(0, EFD_CLOEXEC)) {}
  StdinFeeder(const StdinFeeder&) = delete;
  StdinFeeder& operator=(const StdinFeeder&) = delete;
  ~StdinFeeder() {
    stop();
    ::close(wake_);
  }

  void start() {
    thread_ = std::thread([this] { run(); });
  }
  void stop() {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_, &one, sizeof one);
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::string pending;
    char buf[65536];
    for (;;) {
      pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents) return;
      const auto n = ::read(STDIN_FILENO, buf, sizeof buf);
      if (n <= 0) return;  // EOF: no more jobs from here
      pending.append(buf, static_cast<std::size_t>(n));
      for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
        const std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        auto parsed = wire::parse_job_request(line);
        if (parsed.error.empty()) {
          queue_.publish(std::move(parsed.job));
        } else {
          queue_.publish_invalid(std::move(parsed.job), std::move(parsed.error));
        }
      }
    }
  }

  core::InMemoryQueue& queue_;
  int wake_;
  std::thread thread_;
};

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
