// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// wire::LineStatusSink over a real pipe: each status one JobResponse JSON line
// that parses back to the same result, confirmed after it was written; a
// descriptor that cannot be written fails the publish with the system's error.

#include <blacktree/wire/line_status_sink.hpp>
#include <blacktree/wire/wire.hpp>

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace core = blacktree::core;
namespace wire = blacktree::wire;
using namespace std::chrono_literals;

namespace {

// Publishes `result` and runs `io` until the sink confirms or fails it.
std::error_code publish(asio::io_context& io, wire::LineStatusSink& sink, const core::JobResult& result) {
  std::optional<std::error_code> done;
  sink.async_publish(result, [&](std::error_code ec) { done = ec; });
  CHECK_FALSE(done.has_value());  // never completes inside the call
  io.restart();
  while (!done && io.run_one_for(5s) != 0) {
  }
  REQUIRE(done.has_value());
  return *done;
}

// Everything the pipe holds now (the writer has finished: the sink wrote synchronously).
std::string drain(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const auto n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace

TEST_CASE("LineStatusSink: one JobResponse line per status, confirmed once written", "[line_status_sink]") {
  int fds[2];
  REQUIRE(::pipe2(fds, O_NONBLOCK) == 0);
  asio::io_context io;
  wire::LineStatusSink sink(io.get_executor(), fds[1]);

  core::JobResult ok;
  ok.job_id = "job-1";
  ok.success = true;
  ok.image_url = "registry.local/app@sha256:abc";
  core::JobResult failed;
  failed.job_id = "job-2";
  failed.error = "clone failed: repository not found";

  CHECK_FALSE(publish(io, sink, ok));
  CHECK_FALSE(publish(io, sink, failed));

  const std::string out = drain(fds[0]);
  const auto nl = out.find('\n');
  REQUIRE(nl != std::string::npos);
  REQUIRE(out.back() == '\n');
  CHECK(out.find('\n', nl + 1) == out.size() - 1);  // exactly two lines

  auto first = wire::parse_job_response(out.substr(0, nl));
  auto second = wire::parse_job_response(out.substr(nl + 1, out.size() - nl - 2));
  REQUIRE(first);
  REQUIRE(second);
  CHECK(first->job_id == "job-1");
  CHECK(first->success);
  CHECK(first->image_url == "registry.local/app@sha256:abc");
  CHECK(second->job_id == "job-2");
  CHECK_FALSE(second->success);
  CHECK(second->error == "clone failed: repository not found");
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_CASE("LineStatusSink: a descriptor that cannot be written fails the publish", "[line_status_sink]") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  ::close(fds[1]);  // the sink's descriptor is no longer open: EBADF, not SIGPIPE
  asio::io_context io;
  wire::LineStatusSink sink(io.get_executor(), fds[1]);
  core::JobResult result;
  result.job_id = "job-3";
  const std::error_code ec = publish(io, sink, result);
  CHECK(ec == std::errc::bad_file_descriptor);
  ::close(fds[0]);
}
