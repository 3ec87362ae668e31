// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// What a dispatcher is doing, for people: the jobs it holds (waiting for a
// worker, running, their status going out) with the newest lines of their
// output, and the last jobs it finished. Fed by JobBoardObserver (a
// dispatcher observer); read by a dashboard, an admin RPC or a metrics page,
// from any thread. Bounded: `lines_per_job` lines per job, `finished` jobs.
//
//   core::JobBoard board;
//   core::Dispatcher d(ex, source, transport, sink, pool, {}, core::JobBoardObserver{&board});
//   for (const auto& job : board.jobs(true)) ...
//   auto tail = board.lines("job-7", 0, 10s);  // waits for a line or the end

#include <blacktree/core/detail/config.hpp>
#include <blacktree/core/dispatcher.hpp>
#include <blacktree/core/job.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace blacktree::core {

enum class BoardState : std::uint8_t {
  waiting,     ///< taken from the source, waiting for a worker slot
  running,     ///< on a worker
  publishing,  ///< its result is known; its status is going out
  finished,    ///< its status was confirmed (or it was handed back: see `error`)
};

BLACKTREE_INLINE std::string_view to_string(BoardState state) noexcept;

struct BoardLine {
  std::uint64_t seq = 0;  ///< the line's number in the job's output, from 0
  std::string stage;      ///< the runner's stage when it was written (cloning, building, ...)
  std::string text;
};

struct JobView {
  using Time = std::chrono::system_clock::time_point;
  std::string id;
  BoardState state = BoardState::waiting;
  Labels labels;
  std::uint32_t priority = 0;
  std::string worker_id;
  Phase phase = Phase::accepted;
  std::string stage;  ///< the runner's latest stage
  Time received_at{}, started_at{}, finished_at{};
  bool success = false;
  bool cancelled = false;
  std::string error;
  std::uint64_t lines = 0;      ///< lines of output received (the newest are kept)
  std::uint64_t log_bytes = 0;  ///< bytes of output received
};

/// The jobs waiting for a worker that require one set of labels.
struct Backlog {
  Labels labels;
  std::size_t jobs = 0;
  JobView::Time oldest{};  ///< when the longest-waiting of them was received
};

class JobBoard {
 public:
  struct Options {
    std::size_t lines_per_job = 1000;
    std::size_t finished = 100;
  };

  JobBoard() : JobBoard(Options{}) {}
  explicit JobBoard(Options options) : options_(options) {}

  // --- fed by JobBoardObserver (thread-safe) ---
  /// False (and nothing changes) when a job of that id is held already.
  bool received(const Job& job);
  void assigned(const Job& job, const WorkerInfo& worker);
  void progress(const ProgressEvent& event);
  void result(const Job& job, const JobResult& result);
  void settled(const Job& job);
  /// Dead-lettered, handed back: it leaves the board (a handed-back job is
  /// the source's again; a dead-lettered one is among the finished).
  void dropped(const Job& job, std::string_view why);

  // --- read (thread-safe) ---
  /// The jobs held, oldest first; with `finished`, then the finished ones, newest first.
  std::vector<JobView> jobs(bool finished) const;
  std::optional<JobView> job(const std::string& id) const;
  /// Waiting jobs grouped by the labels they require.
  std::vector<Backlog> backlog() const;

  struct Tail {
    std::vector<BoardLine> lines;  ///< those kept with seq >= from, oldest first
    bool known = false;            ///< the job is (or was recently) on the board
    bool ended = false;            ///< no more lines will come
    bool closed = false;           ///< the board was closed: stop reading
    std::uint64_t next = 0;        ///< the `from` for the next call
  };
  /// Lines of job `id` from number `from` on. When there are none yet and the
  /// job has not ended, waits up to `wait` for one (or for its end, or close()).
  Tail lines(const std::string& id, std::uint64_t from, std::chrono::milliseconds wait) const;

  /// Wakes every lines() waiter, which then returns at once (for a shutdown).
  void close();

 private:
  struct Entry {
    JobView view;
    std::deque<BoardLine> tail;
  };

  Entry* find_locked(const std::string& id);
  void finish_locked(std::unordered_map<std::string, Entry>::iterator it);

  Options options_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  bool closed_ = false;
  std::unordered_map<std::string, Entry> held_;
  std::deque<Entry> finished_;  // newest first
};

/// A dispatcher observer that keeps a JobBoard. Compose it with another
/// observer by holding one in yours and forwarding the hooks.
///
/// The board is keyed by job id. A delivery the dispatcher does not attach
/// to the run of its id (an invalid message that carries the id of a job in
/// flight) is left off the board: its hooks are told apart by the job's
/// address, which the dispatcher keeps for a delivery's whole life (the
/// hooks other than on_progress run on the dispatcher's strand).
struct JobBoardObserver : DispatcherObserver {
  static constexpr bool wants_progress = true;
  JobBoard* board = nullptr;

  JobBoardObserver() = default;
  explicit JobBoardObserver(JobBoard* b) : board(b) {}

  void on_received(const Job& job) {
    if (!board->received(job)) shadowed_.insert(&job);
  }
  void on_assigned(const Job& job, const WorkerInfo& worker) {
    if (!shadowed_.contains(&job)) board->assigned(job, worker);
  }
  void on_progress(const ProgressEvent& event) { board->progress(event); }
  void on_finished(const Job& job, const JobResult& result) {
    if (!shadowed_.contains(&job)) board->result(job, result);
  }
  void on_settled(const Job& job) {
    if (shadowed_.erase(&job) == 0) board->settled(job);
  }
  void on_dead_lettered(const Job& job, std::string_view reason) {
    if (!shadowed_.contains(&job)) {
      board->dropped(job, reason);
    } else if (job.id.empty()) {
      shadowed_.erase(&job);  // dead-lettered at once, with no status to settle
    }
  }
  void on_handed_back(const Job& job) {
    if (shadowed_.erase(&job) == 0) board->dropped(job, "handed back to the queue");
  }

 private:
  std::unordered_set<const Job*> shadowed_;
};
static_assert(ObservesDispatcher<JobBoardObserver>);

}  // namespace blacktree::core

#ifdef BLACKTREE_HEADER_ONLY
#include <blacktree/core/job_board-inl.hpp>
#endif
