// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// wire::LineFeeder over a real pipe: lines split and joined across writes,
// blank lines skipped, stop() prompt while no input comes, the end of input
// reported, and job_request_lines feeding an InMemoryQueue.

#include <blacktree/core/in_memory.hpp>
#include <blacktree/wire/line_feeder.hpp>

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace core = blacktree::core;
namespace wire = blacktree::wire;
using namespace std::chrono_literals;

namespace {

// Both ends of a pipe, closed on scope exit unless closed before.
struct Pipe {
  Pipe() { REQUIRE(::pipe(fds) == 0); }
  ~Pipe() {
    close_writer();
    ::close(fds[0]);
  }
  int reader() const { return fds[0]; }
  void write(std::string_view text) const {
    REQUIRE(::write(fds[1], text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  }
  void close_writer() {
    if (fds[1] >= 0) ::close(fds[1]);
    fds[1] = -1;
  }
  int fds[2] = {-1, -1};
};

// The lines a feeder handed over, waited for without sleeping.
class Lines {
 public:
  void add(std::string line) {
    std::lock_guard lock(mutex_);
    lines_.push_back(std::move(line));
    changed_.notify_all();
  }
  std::vector<std::string> wait_for(std::size_t n) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 10s, [&] { return lines_.size() >= n; });
    return lines_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> lines_;
};

}  // namespace

TEST_CASE("LineFeeder: hands over whole lines, however the writes split them", "[line_feeder]") {
  Pipe pipe;
  Lines lines;
  wire::LineFeeder feeder(pipe.reader(), [&](std::string line) { lines.add(std::move(line)); });
  REQUIRE(feeder.start());

  pipe.write("first\nsec");
  pipe.write("ond\n\n  \t\r\nthird\r\n");
  pipe.write("fourth\nfif");
  CHECK(lines.wait_for(4) == std::vector<std::string>{"first", "second", "third\r", "fourth"});
  pipe.write("th\n");
  CHECK(lines.wait_for(5).back() == "fifth");
  feeder.stop();
}

TEST_CASE("LineFeeder: stop returns while no input comes", "[line_feeder]") {
  Pipe pipe;  // the writer stays open and silent
  bool ended = false;
  wire::LineFeeder feeder(pipe.reader(), [](std::string) {}, [&] { ended = true; });
  REQUIRE(feeder.start());
  auto stopped = std::async(std::launch::async, [&] { feeder.stop(); });
  REQUIRE(stopped.wait_for(10s) == std::future_status::ready);
  CHECK_FALSE(ended);  // a stop is not the end of input
  feeder.stop();       // idempotent
}

TEST_CASE("LineFeeder: stopped, it starts again and stops again", "[line_feeder]") {
  Pipe pipe;  // the writer stays open
  Lines lines;
  wire::LineFeeder feeder(pipe.reader(), [&](std::string line) { lines.add(std::move(line)); });
  for (std::size_t round = 1; round <= 3; ++round) {
    REQUIRE(feeder.start());  // takes the wake-up the last stop() left
    const std::string line = "round " + std::to_string(round);
    pipe.write(line + "\n");
    CHECK(lines.wait_for(round).back() == line);
    auto stopped = std::async(std::launch::async, [&] { feeder.stop(); });
    REQUIRE(stopped.wait_for(10s) == std::future_status::ready);  // this stop() woke it too
  }
}

TEST_CASE("LineFeeder: the end of input is reported, and an unfinished last line dropped", "[line_feeder]") {
  Pipe pipe;
  Lines lines;
  std::promise<void> ended;
  wire::LineFeeder feeder(
      pipe.reader(), [&](std::string line) { lines.add(std::move(line)); }, [&] { ended.set_value(); });
  REQUIRE(feeder.start());
  CHECK_FALSE(feeder.start());  // one thread per feeder
  pipe.write("complete\nunfinished");
  pipe.close_writer();
  REQUIRE(ended.get_future().wait_for(10s) == std::future_status::ready);
  CHECK(lines.wait_for(1) == std::vector<std::string>{"complete"});
}

TEST_CASE("LineFeeder: job_request_lines publishes valid jobs and invalid ones with their reason",
          "[line_feeder]") {
  asio::io_context io;
  core::InMemoryQueue queue(io.get_executor());
  Pipe pipe;
  std::promise<void> ended;
  wire::LineFeeder feeder(pipe.reader(), wire::job_request_lines(queue), [&] { ended.set_value(); });
  REQUIRE(feeder.start());
  pipe.write(R"({"jobId":"j1","repoUrl":"owner/name","branch":"main","imageName":"app"})"
             "\n"
             R"({"jobId":"j2","repoUrl":"owner/name"})"
             "\n"
             "not json\n");
  pipe.close_writer();
  REQUIRE(ended.get_future().wait_for(10s) == std::future_status::ready);
  REQUIRE(queue.ready() == 3);

  std::vector<std::pair<std::string, std::string>> received;  // job id, invalid reason
  for (int i = 0; i < 3; ++i) {
    queue.async_receive([&](std::error_code ec, core::InMemoryQueue::Delivery delivery) {
      REQUIRE_FALSE(ec);
      received.emplace_back(delivery.job().id, std::string(delivery.invalid_reason()));
      queue.ack(delivery);
    });
  }
  io.run_for(10s);
  REQUIRE(received.size() == 3);
  CHECK(received[0] == std::pair<std::string, std::string>{"j1", ""});
  CHECK(received[1].first == "j2");
  CHECK_FALSE(received[1].second.empty());  // names what is missing
  CHECK(received[2].first.empty());
  CHECK_FALSE(received[2].second.empty());
}
