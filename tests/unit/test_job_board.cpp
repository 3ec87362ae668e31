// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0

#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/job_board.hpp>

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <future>
#include <thread>

#include "../support/test_support.hpp"

namespace core = blacktree::core;
using namespace std::chrono_literals;
using blacktree::test::make_job;
using blacktree::test::make_worker;
using blacktree::test::run_until;

namespace {

core::ProgressEvent line(const std::string& job, std::string text, std::string stage = "building") {
  return core::ProgressEvent{job, "w1", core::Phase::running, std::move(stage), std::move(text)};
}

// A dispatcher feeding a board, with one loopback worker "w1" of two slots
// whose runs `runner` handles.
struct BoardRig {
  explicit BoardRig(core::LoopbackTransport::Runner runner) {
    transport.add_endpoint("loopback:w1", 2, std::move(runner));
    auto info = make_worker("w1", 2);
    info.incarnation = transport.incarnation(info.address);
    REQUIRE(pool.register_worker(info));
    REQUIRE(pool.mark_alive("w1"));
  }

  asio::io_context io;
  core::InMemoryQueue queue{io.get_executor()};
  core::LoopbackTransport transport{io.get_executor()};
  core::InMemoryStatusSink sink{io.get_executor()};
  core::WorkerPool pool{io.get_executor()};
  core::JobBoard board;
  core::Dispatcher<core::InMemoryQueue, core::LoopbackTransport, core::InMemoryStatusSink, core::WorkerPool,
                   core::JobBoardObserver>
      dispatcher{io.get_executor(), queue, transport, sink, pool, {}, core::JobBoardObserver{&board}};
};

}  // namespace

TEST_CASE("JobBoard: a job goes waiting, running, publishing, finished, with its lines", "[job_board]") {
  core::JobBoard board(core::JobBoard::Options{3, 2});
  auto job = make_job("j1", {{"region", "eu"}});
  job.priority = 7;
  board.received(job);
  REQUIRE(board.jobs(false).size() == 1);
  CHECK(board.jobs(false)[0].state == core::BoardState::waiting);
  CHECK(board.jobs(false)[0].priority == 7);
  REQUIRE(board.backlog().size() == 1);
  CHECK(board.backlog()[0].jobs == 1);
  CHECK(board.backlog()[0].labels == core::Labels{{"region", "eu"}});

  board.assigned(job, make_worker("w1"));
  CHECK(board.backlog().empty());
  for (int i = 0; i < 5; ++i) board.progress(line("j1", "line " + std::to_string(i)));
  auto view = board.job("j1");
  REQUIRE(view);
  CHECK(view->state == core::BoardState::running);
  CHECK(view->worker_id == "w1");
  CHECK(view->stage == "building");
  CHECK(view->lines == 5);
  CHECK(view->log_bytes == 5 * 6);

  // Only the newest 3 lines are kept; a reader from 0 gets those, numbered.
  auto tail = board.lines("j1", 0, 0ms);
  REQUIRE(tail.lines.size() == 3);
  CHECK(tail.lines.front().seq == 2);
  CHECK(tail.lines.front().text == "line 2");
  CHECK(tail.next == 5);
  CHECK_FALSE(tail.ended);

  core::JobResult result;
  result.success = false;
  result.cancelled = true;
  result.error = "cancelled while running";
  board.result(job, result);
  CHECK(board.job("j1")->state == core::BoardState::publishing);
  CHECK(board.lines("j1", 5, 1s).ended);  // no wait: it has ended
  board.settled(job);
  CHECK(board.jobs(false).empty());
  auto all = board.jobs(true);
  REQUIRE(all.size() == 1);
  CHECK(all[0].state == core::BoardState::finished);
  CHECK(all[0].cancelled);
  CHECK(all[0].error == "cancelled while running");
  CHECK(board.lines("j1", 0, 0ms).lines.size() == 3);  // a finished job's tail stays readable
}

TEST_CASE("JobBoard: the finished list is bounded and newest first, and dropped jobs say why", "[job_board]") {
  core::JobBoard board(core::JobBoard::Options{10, 2});
  for (const char* id : {"a", "b", "c"}) {
    board.received(make_job(id));
    board.result(make_job(id), core::JobResult{});
    board.settled(make_job(id));
  }
  board.received(make_job("d"));
  board.dropped(make_job("d"), "handed back to the queue");
  auto all = board.jobs(true);
  REQUIRE(all.size() == 2);
  CHECK(all[0].id == "d");
  CHECK(all[0].error == "handed back to the queue");
  CHECK(all[1].id == "c");
  CHECK_FALSE(board.job("a"));
  CHECK_FALSE(board.lines("a", 0, 0ms).known);
}

TEST_CASE("JobBoard: a reader waits for the next line or the end, and close() wakes it", "[job_board]") {
  core::JobBoard board;
  board.received(make_job("j"));
  auto waiting = std::async(std::launch::async, [&] { return board.lines("j", 0, 30s); });
  CHECK(waiting.wait_for(50ms) == std::future_status::timeout);  // nothing yet: it waits
  board.progress(line("j", "hello"));
  auto got = waiting.get();
  REQUIRE(got.lines.size() == 1);
  CHECK(got.lines[0].text == "hello");

  auto ending = std::async(std::launch::async, [&] { return board.lines("j", 1, 30s); });
  board.result(make_job("j"), core::JobResult{});
  CHECK(ending.get().ended);

  board.received(make_job("k"));
  auto closing = std::async(std::launch::async, [&] { return board.lines("k", 0, 30s); });
  board.close();
  auto closed = closing.get();
  CHECK(closed.closed);
  CHECK(closed.lines.empty());
}

TEST_CASE("JobBoard: fed by a dispatcher, it follows every job to its settled status", "[job_board]") {
  BoardRig rig([](core::LoopbackTransport::Call call) {
    call.progress("building", "step 1");
    core::JobResult r;
    r.success = true;
    call.complete(r);
  });
  auto& board = rig.board;
  for (int i = 0; i < 5; ++i) rig.queue.publish(make_job("job-" + std::to_string(i)));
  rig.dispatcher.start();
  REQUIRE(run_until(rig.io, [&] { return rig.queue.acked() == 5; }));
  CHECK(board.jobs(false).empty());
  auto all = board.jobs(true);
  REQUIRE(all.size() == 5);
  for (const auto& job : all) {
    CHECK(job.state == core::BoardState::finished);
    CHECK(job.success);
    CHECK(job.worker_id == "w1");
    CHECK(job.lines == 1);
  }
}

TEST_CASE("JobBoard: an invalid message carrying the id of a job in flight leaves that job's entry alone",
          "[job_board]") {
  std::vector<core::LoopbackTransport::Call> held;
  // Two slots: the invalid message is taken while "dup" runs.
  BoardRig rig([&](core::LoopbackTransport::Call call) {
    call.progress("building", "step 1");
    held.push_back(std::move(call));
  });
  auto& io = rig.io;
  auto& queue = rig.queue;
  auto& board = rig.board;
  queue.publish(make_job("dup"));
  rig.dispatcher.start();
  REQUIRE(run_until(io, [&] { return held.size() == 1; }));
  queue.publish_invalid(make_job("dup"), "repoUrl is missing");
  REQUIRE(run_until(io, [&] { return queue.dead_letters().size() == 1; }));
  auto view = board.job("dup");
  REQUIRE(view);
  CHECK(view->state == core::BoardState::running);
  CHECK(view->worker_id == "w1");
  CHECK(view->error.empty());
  CHECK(board.jobs(true).size() == 1);

  core::JobResult ok;
  ok.success = true;
  held[0].complete(ok);
  REQUIRE(run_until(io, [&] { return board.jobs(false).empty(); }));
  auto all = board.jobs(true);
  REQUIRE(all.size() == 1);
  CHECK(all[0].success);
  CHECK(all[0].lines == 1);
}
