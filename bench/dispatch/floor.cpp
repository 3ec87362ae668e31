// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// A floor for the Dispatcher, not a competitor: the same InMemoryQueue and
// WorkerPool, and a sink that only counts (one post confirms a batch, as the
// blacktree run's counting sink does), driven by a sketch of a batched
// dispatcher. Each job lives in one slot of a vector owned by a strand; runs
// and confirms come back as batches of slot indexes (one post to the strand
// per batch each way, where LoopbackTransport and the counting sink post once
// per job for the Dispatcher), and the acks of a confirmed batch go in one
// call. It has none of the Dispatcher's contract beyond ack-after-confirm and
// the window (no labels waiting, cancellation, deadlines, stop), so it says
// how fast the models and asio let a dispatcher go, and, with `bookkeeping`,
// what the Dispatcher's per-job records cost on top: the finished record's
// lookup and put, the in-flight index by job id, three clock reads and a
// status id.

#include "dispatch.hpp"

#include <blacktree/core/detail/recent_ids.hpp>
#include <blacktree/core/in_memory.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>

#include <atomic>
#include <charconv>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace blacktree::bench {
namespace {

namespace bt = blacktree::core;

class SlotDispatcher {
 public:
  SlotDispatcher(asio::any_io_executor executor, bt::InMemoryQueue& queue, bt::WorkerPool& pool, std::size_t window,
                 bool bookkeeping)
      : strand_(asio::make_strand(std::move(executor))),
        queue_(queue),
        pool_(pool),
        bookkeeping_(bookkeeping),
        slots_(window) {
    free_.reserve(window);
    for (std::size_t i = window; i > 0; --i) free_.push_back(static_cast<std::uint32_t>(i - 1));
  }

  void start() {
    asio::post(strand_, [this] { pump(); });
  }
  std::size_t confirmed() const { return confirmed_.load(std::memory_order_relaxed); }

 private:
  struct Slot {
    bt::InMemoryQueue::Delivery delivery;
    bt::WorkerPool::Lease lease;
    bt::JobResult result;
    std::chrono::system_clock::time_point received_at;
  };
  using Batch = std::vector<std::uint32_t>;

  // `then` on the strand, posted: a completion (of a transport, a sink)
  // never runs inside the call that started it.
  template <class F>
  void complete_later(F then) {
    asio::post(strand_, std::move(then));
  }

  // What the queue holds, up to the free slots: each leased a worker and run.
  void pump() {
    if (free_.empty()) return;
    auto deliveries = queue_.try_receive_some(free_.size());
    if (deliveries.empty()) return;
    Batch started;
    started.reserve(deliveries.size());
    for (auto& delivery : deliveries) {
      const std::uint32_t i = free_.back();
      free_.pop_back();
      Slot& slot = slots_[i];
      if (bookkeeping_) {
        if (finished_.find(delivery.job().id)) throw std::logic_error("a job id finished twice");
        by_id_.emplace(delivery.job().id, i);
        slot.received_at = std::chrono::system_clock::now();
      }
      slot.lease = pool_.try_acquire(delivery.job().required_labels);
      if (!slot.lease) throw std::logic_error("no free worker inside the window");
      slot.delivery = std::move(delivery);
      started.push_back(i);
    }
    complete_later([this, done = std::move(started)] { on_results(done); });
  }

  // A batch of runs succeeded: the statuses go to the sink in one call.
  void on_results(const Batch& done) {
    for (const std::uint32_t i : done) {
      Slot& slot = slots_[i];
      slot.result = bt::JobResult{};
      slot.result.success = true;
      slot.result.job_id = slot.delivery.job().id;
      slot.result.worker_id = slot.lease.worker().id;
      if (bookkeeping_) {
        slot.result.received_at = slot.received_at;
        slot.result.started_at = std::chrono::system_clock::now();
        slot.result.finished_at = std::chrono::system_clock::now();
        char digits[20];
        const auto end = std::to_chars(std::begin(digits), std::end(digits), ++runs_).ptr;
        slot.result.status_id.reserve(token_.size() + 1 + static_cast<std::size_t>(end - digits));
        slot.result.status_id.append(token_).append(1, '-').append(digits, end);
      }
      slot.lease.release();
    }
    confirmed_.fetch_add(done.size(), std::memory_order_relaxed);  // the sink: counts, confirms below
    complete_later([this, done] { on_confirmed(done); });
    pump();
  }

  // A batch of statuses confirmed: their deliveries acked in one call.
  void on_confirmed(const Batch& done) {
    std::vector<bt::InMemoryQueue::Delivery> acks;
    acks.reserve(done.size());
    for (const std::uint32_t i : done) {
      if (bookkeeping_) {
        finished_.put(slots_[i].delivery.job().id, true);
        by_id_.erase(slots_[i].delivery.job().id);
      }
      acks.push_back(std::move(slots_[i].delivery));
      free_.push_back(i);
    }
    queue_.ack(std::span(acks));
    pump();
  }

  asio::strand<asio::any_io_executor> strand_;
  bt::InMemoryQueue& queue_;
  bt::WorkerPool& pool_;
  const bool bookkeeping_;
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;
  std::atomic<std::size_t> confirmed_{0};
  bt::detail::RecentIds<bool> finished_{10'000, std::chrono::hours(1)};
  std::unordered_map<std::string, std::uint32_t> by_id_;
  const std::string token_ = "0123456789abcdef";
  std::uint64_t runs_ = 0;
};

}  // namespace

Throughput run_floor(const DispatchConfig& config, bool bookkeeping) {
  asio::io_context io(static_cast<int>(config.threads));
  bt::WorkerPool pool(io.get_executor());
  bt::InMemoryQueue queue(io.get_executor());
  add_live_workers(pool, config.workers, config.capacity);
  publish_jobs(queue, config.jobs);
  SlotDispatcher dispatcher(io.get_executor(), queue, pool, config.workers * config.capacity, bookkeeping);

  const auto start = Clock::now();
  dispatcher.start();
  std::vector<std::thread> threads;
  threads.reserve(config.threads);
  for (unsigned t = 0; t < config.threads; ++t) threads.emplace_back([&io] { io.run(); });
  for (auto& thread : threads) thread.join();  // out of work once the queue is empty and every ack is in
  const auto stop = Clock::now();

  if (dispatcher.confirmed() != config.jobs || queue.acked() != config.jobs)
    throw std::runtime_error("floor run incomplete: " + std::to_string(dispatcher.confirmed()) + " confirmed, " +
                             std::to_string(queue.acked()) + " acked of " + std::to_string(config.jobs));
  return Throughput{config.jobs, std::chrono::duration<double>(stop - start).count()};
}

}  // namespace blacktree::bench
