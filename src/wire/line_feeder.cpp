// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/wire/line_feeder.hpp>

#include <blacktree/wire/wire.hpp>

#include "common/waker.hpp"

#include <cerrno>
#include <string_view>
#include <system_error>
#include <thread>

#include <poll.h>
#include <unistd.h>

namespace blacktree::wire {

struct LineFeeder::Impl {
  Impl(int f, LineHandler line, EndHandler end) : fd(f), on_line(std::move(line)), on_end(std::move(end)) {}

  void run() {
    std::string pending;
    char buf[65536];
    for (;;) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {waker.fd(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      if (fds[1].revents != 0) return;  // stop(): no end to report
      const auto n = ::read(fd, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) break;  // end of input, or a descriptor that cannot be read
      pending.append(buf, static_cast<std::size_t>(n));
      std::size_t begin = 0;
      for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n', begin)) {
        std::string line = pending.substr(begin, nl - begin);
        begin = nl + 1;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        on_line(std::move(line));
      }
      pending.erase(0, begin);
    }
    if (on_end) on_end();
  }

  int fd;
  LineHandler on_line;
  EndHandler on_end;
  detail::Waker waker;
  std::thread thread;
};

LineFeeder::LineFeeder(int fd, LineHandler on_line, EndHandler on_end)
    : impl_(std::make_unique<Impl>(fd, std::move(on_line), std::move(on_end))) {}

LineFeeder::~LineFeeder() { stop(); }

core::Result<void> LineFeeder::start() {
  if (!impl_->waker.valid()) {
    return core::Error{std::make_error_code(std::errc::too_many_files_open),
                       "cannot create the eventfd that stops the line feeder: raise the descriptor limit"};
  }
  if (impl_->thread.joinable()) {
    return core::Error{std::make_error_code(std::errc::operation_in_progress), "the line feeder is already running"};
  }
  impl_->waker.drain();  // a wake-up left by an earlier stop()
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
  return {};
}

void LineFeeder::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->waker.notify();
  impl_->thread.join();
}

LineFeeder::LineHandler job_request_lines(core::InMemoryQueue& queue) {
  return [&queue](std::string line) {
    auto parsed = parse_job_request(line);
    if (parsed.valid) {
      queue.publish(std::move(parsed.job));
    } else {
      queue.publish_invalid(std::move(parsed.job), parsed.valid.error().message());
    }
  };
}

}  // namespace blacktree::wire
