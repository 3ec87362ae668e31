// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <blacktree/core/completion_handler.hpp>
#include <blacktree/core/concepts.hpp>
#include <blacktree/core/detail/config.hpp>
#include <blacktree/core/detail/null_mutex.hpp>
#include <blacktree/core/error.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/result.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/error.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace blacktree::core {

/// A worker as the pool sees it at one moment.
struct WorkerSnapshot {
  std::shared_ptr<const WorkerInfo> info;
  WorkerState state = WorkerState::registering;
  std::uint32_t in_use = 0;      ///< slots leased out
  std::uint64_t generation = 0;  ///< bumped whenever the worker's leases are voided
  std::chrono::steady_clock::time_point last_seen{};
};

/// A change in a worker's life: added, alive, draining, dead, removed. The
/// pool reports lifecycle changes only; slots being leased and returned
/// (free <-> busy) are the hot path and report nothing.
struct WorkerEvent {
  std::shared_ptr<const WorkerInfo> info;
  WorkerState from = WorkerState::registering;
  WorkerState to = WorkerState::registering;
  bool added = false;    ///< first registration of this id
  bool removed = false;  ///< deregistered; `to` is meaningless
  /// Leases taken in generation `lost_generation` are void: whatever ran on
  /// them is lost (the worker died, restarted, or left).
  bool leases_lost = false;
  std::uint64_t lost_generation = 0;
  std::string reason;
};

/// The registered workers and their free slots.
///
/// Every worker offers `capacity` slots. `async_acquire` leases one slot of a
/// worker whose labels include the required ones; when none is free it waits
/// (FIFO among the waiters that slot could serve) without polling. A Lease
/// returns its slot exactly once, and a slot returns to the free set only if
/// the worker is still the same live incarnation; so a worker is never in the
/// free set twice, never lost from it, and a dead or removed worker is never
/// handed out, not even to a waiter that was already pending.
///
/// Thread-safe with `Mutex = std::mutex` (WorkerPool). Handlers run on their
/// associated executor, defaulting to the pool's. Lifecycle changes are
/// reported to subscribers synchronously, after the pool's lock is released,
/// on the thread that made the change.
///
/// Cost: acquire for a job with no required labels is O(1) in the number of
/// workers (round-robin over the free set); with labels it scans the free set.
template <class Mutex>
class BasicWorkerPool {
  struct Record;
  struct State;

 public:
  using executor_type = asio::any_io_executor;

  /// One leased slot. Move-only; returns the slot when released or destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept = default;
    Lease& operator=(Lease&& other) noexcept {
      if (this != &other) {
        release();
        state_ = std::move(other.state_);
        record_ = std::move(other.record_);
        info_ = std::move(other.info_);
        generation_ = other.generation_;
      }
      return *this;
    }
    ~Lease() { release(); }

    /// Holds a slot (not yet released).
    explicit operator bool() const noexcept { return state_ != nullptr; }
    const WorkerInfo& worker() const noexcept { return *info_; }
    const std::shared_ptr<const WorkerInfo>& worker_info() const noexcept { return info_; }
    std::uint64_t generation() const noexcept { return generation_; }

    /// The worker is alive and is still the incarnation the slot was taken from.
    bool current() const;

    /// Returns the slot (to a waiter or the free set). Does nothing the second time.
    void release() noexcept;

   private:
    friend class BasicWorkerPool;
    Lease(std::shared_ptr<State> state, std::shared_ptr<Record> record)
        : state_(std::move(state)),
          record_(std::move(record)),
          info_(record_->info),
          generation_(record_->generation) {}

    std::shared_ptr<State> state_;
    std::shared_ptr<Record> record_;
    std::shared_ptr<const WorkerInfo> info_;
    std::uint64_t generation_ = 0;
  };

  /// Unsubscribes when destroyed. A listener may still be running on another
  /// thread while this is destroyed, so listeners should hold weak references.
  class Subscription {
   public:
    Subscription() = default;
    Subscription(Subscription&&) noexcept = default;
    Subscription& operator=(Subscription&& other) noexcept {
      reset();
      state_ = std::move(other.state_);
      id_ = other.id_;
      return *this;
    }
    ~Subscription() { reset(); }
    void reset() noexcept;

   private:
    friend class BasicWorkerPool;
    Subscription(std::weak_ptr<State> state, std::uint64_t id) : state_(std::move(state)), id_(id) {}
    std::weak_ptr<State> state_;
    std::uint64_t id_ = 0;
  };

  using Listener = std::function<void(const WorkerEvent&)>;

  explicit BasicWorkerPool(executor_type executor)
      : state_(std::make_shared<State>(std::move(executor))) {}
  BasicWorkerPool(const BasicWorkerPool&) = delete;
  BasicWorkerPool& operator=(const BasicWorkerPool&) = delete;
  ~BasicWorkerPool() { stop(); }

  executor_type get_executor() const noexcept { return state_->executor; }

  /// Adds a worker in state `registering` (it takes no job until mark_alive),
  /// or re-registers a known id. A new incarnation, or a worker that was dead,
  /// starts over in `registering` and the old incarnation's leases are void.
  /// The same live incarnation registering again only updates its details
  /// (and takes back a deregistration still waiting for its jobs).
  /// Fails with errc::invalid_worker (no id, no address or capacity 0),
  /// errc::pool_stopped, or errc::duplicate_worker: the id belongs to a live
  /// worker (free, busy or draining: it answers pings) at another address
  /// with another incarnation, i.e. a second process took the same id. The
  /// first keeps it until it is declared dead or has left. A new incarnation
  /// at the same address is a restart (only one process can answer there), so
  /// it replaces the old one at once.
  ///
  /// `carried_jobs`: jobs the worker runs, or keeps the results of, from
  /// before it registered here (the orchestrator it ran them for went away).
  /// A job id carried by a live worker is handed out by claim(), so that its
  /// delivery attaches to that run instead of starting another. Replaces what
  /// the worker said before; a job id two workers carry belongs to the last
  /// that said so; forgotten when the worker is removed.
  Result<void> register_worker(WorkerInfo info, std::vector<std::string> carried_jobs = {});

  /// Changes a live worker's address, labels, capacity or version in place.
  /// Fails with errc::invalid_worker or errc::unknown_worker.
  Result<void> update_worker(WorkerInfo info);

  /// The worker answered (registration probe or ping). `registering` and
  /// `dead` become free. A non-empty `incarnation` that differs from the known
  /// one means the worker restarted: its leases are void.
  /// This and the calls below fail only with errc::unknown_worker.
  Result<void> mark_alive(std::string_view id, std::string_view incarnation = {});

  /// The worker stopped answering: out of the free set, its leases void.
  Result<void> mark_dead(std::string_view id, std::string reason);

  /// Takes no new jobs; running ones finish. `resume` undoes it.
  Result<void> drain(std::string_view id);
  Result<void> resume(std::string_view id);

  /// The worker leaves. With slots still leased it drains first (takes
  /// nothing new) and is removed when the last lease returns, so the jobs it
  /// is finishing keep their leases and are not lost; without, at once. A
  /// leaving worker declared dead or restarted is removed then (its leases
  /// void). Registering again with the same incarnation cancels the leave.
  Result<void> deregister(std::string_view id, std::string reason);

  /// Leases a slot of a live worker offering every label in `required`.
  /// Completion: `void(std::error_code, Lease)`; errc::pool_stopped after
  /// stop(); asio::error::operation_aborted when cancelled through the
  /// handler's cancellation slot (which must be emitted from the thread or
  /// strand that called async_acquire).
  template <class Token>
  auto async_acquire(Labels required, Token&& token) {
    return async_acquire(std::move(required), std::uint8_t{0}, std::forward<Token>(token));
  }

  /// The same, for a job of `priority`: a waiter of higher priority is
  /// served before those of lower (FIFO among equals), whatever their order.
  template <class Token>
  auto async_acquire(Labels required, std::uint8_t priority, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, Lease)>(
        [this, priority](auto handler, Labels labels) {
          initiate_acquire(std::move(handler), std::move(labels), priority);
        },
        token, std::move(required));
  }

  /// A free slot of a live worker offering every label in `required`, taken
  /// at once; an empty Lease when there is none (or after stop()). Never
  /// waits and never jumps the queue of waiters: a slot they could use is
  /// handed to them when it returns, before it is free for this call.
  Lease try_acquire(const Labels& required);

  /// A lease on the live worker carrying `job_id` (see register_worker), taken even
  /// when every slot of that worker is in use (the job holds one there
  /// already, or has finished): the worker is no longer said to carry it.
  /// Empty when no live worker carries it (one still registering keeps it,
  /// for a later claim). Without carried jobs this costs one atomic load.
  Lease claim(std::string_view job_id);

  /// The job ids registered workers carry and no claim() has taken yet (what
  /// an orchestrator tells its peers, so that a redelivery of one that
  /// reaches another orchestrator comes back to this one).
  std::vector<std::string> carried_job_ids() const;

  /// Fails every pending and future acquire with errc::pool_stopped.
  void stop();

  Subscription subscribe(Listener listener);

  /// Sum of the capacity of live, non-draining workers (free + busy). Lock-free.
  std::size_t alive_capacity() const noexcept { return state_->alive_capacity.load(std::memory_order_acquire); }
  std::size_t size() const;
  std::size_t waiting() const;
  std::optional<WorkerSnapshot> find(std::string_view id) const;
  std::vector<WorkerSnapshot> snapshot() const;

 private:
  struct Record : std::enable_shared_from_this<Record> {
    std::shared_ptr<const WorkerInfo> info;
    WorkerState state = WorkerState::registering;
    std::uint32_t in_use = 0;
    std::uint64_t generation = 1;
    bool removed = false;
    bool leaving = false;  // deregistered; removed when its last lease returns
    std::string leave_reason;
    bool listed = false;
    Record* free_prev = nullptr;  // neighbours in State::free_list while listed
    Record* free_next = nullptr;
    std::chrono::steady_clock::time_point last_seen{};
    std::vector<std::string> carried;  // see register_worker()
  };

  // Workers with a free slot, in round-robin order: intrusive (the links
  // live in the records), so a slot freed and taken allocates nothing.
  struct FreeList {
    Record* head = nullptr;
    Record* tail = nullptr;
    void push_back(Record& r) noexcept {
      r.free_prev = tail;
      r.free_next = nullptr;
      (tail ? tail->free_next : head) = &r;
      tail = &r;
    }
    void erase(Record& r) noexcept {
      (r.free_prev ? r.free_prev->free_next : head) = r.free_next;
      (r.free_next ? r.free_next->free_prev : tail) = r.free_prev;
      r.free_prev = r.free_next = nullptr;
    }
    void move_to_back(Record& r) noexcept {
      if (tail == &r) return;
      erase(r);
      push_back(r);
    }
  };

  struct Waiter {
    std::uint64_t id = 0;
    std::uint8_t priority = 0;
    Labels labels;
    CompletionHandler<void(std::error_code, Lease)> handler;
  };

  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };

  struct State {
    explicit State(executor_type ex) : executor(std::move(ex)) {}

    executor_type executor;
    mutable Mutex mutex;
    std::unordered_map<std::string, std::shared_ptr<Record>, StringHash, std::equal_to<>> workers;
    FreeList free_list;          // live, non-draining, with a free slot; round-robin order
    std::list<Waiter> waiters;   // by priority, highest first; FIFO among equals
    std::uint64_t next_waiter_id = 1;
    std::map<std::uint64_t, std::shared_ptr<Listener>> listeners;
    std::uint64_t next_listener_id = 1;
    bool stopped = false;
    std::atomic<std::size_t> alive_capacity{0};
    // Job id -> the worker that carries it (see register_worker()); `carried_count`
    // is its size, read without the lock by claim().
    std::unordered_map<std::string, std::shared_ptr<Record>, StringHash, std::equal_to<>> carriers;
    std::atomic<std::size_t> carried_count{0};
  };

  // Work collected under the lock, done after it is released.
  struct Deferred {
    std::vector<std::pair<CompletionHandler<void(std::error_code, Lease)>, Lease>> grants;
    std::vector<CompletionHandler<void(std::error_code, Lease)>> failures;
    std::error_code failure_code;
    std::vector<WorkerEvent> events;
  };

  class CancelWaiter {
   public:
    CancelWaiter(std::weak_ptr<State> state, std::uint64_t id) : state_(std::move(state)), id_(id) {}
    void operator()(asio::cancellation_type type);

   private:
    std::weak_ptr<State> state_;
    std::uint64_t id_;
  };

  template <class Handler>
  void initiate_acquire(Handler handler, Labels labels, std::uint8_t priority);

  static bool counts_as_capacity(WorkerState s) noexcept {
    return s == WorkerState::free || s == WorkerState::busy;
  }
  static bool holds_leases(WorkerState s) noexcept {
    return s == WorkerState::free || s == WorkerState::busy || s == WorkerState::draining;
  }

  static Record* find_free(State& st, const Labels& required) noexcept;
  static void set_state(State& st, Record& rec, WorkerState next);
  static void refresh(State& st, Record& rec);
  static void take_slot(State& st, Record& rec);
  static void offer_slots(const std::shared_ptr<State>& st, const std::shared_ptr<Record>& rec, Deferred& out);
  static void void_leases(State& st, Record& rec, WorkerEvent& event);
  static void forget_carried(State& st, Record& rec);
  static void set_carried(State& st, const std::shared_ptr<Record>& rec, std::vector<std::string> job_ids);
  static void apply_update(const std::shared_ptr<State>& st, const std::shared_ptr<Record>& rec, WorkerInfo info,
                           Deferred& out);
  static void finish(const std::shared_ptr<State>& st, Deferred& deferred);
  static void mark_alive_locked(const std::shared_ptr<State>& st, const std::shared_ptr<Record>& rec,
                                std::string_view incarnation, Deferred& deferred);
  // `rec` by value: callers pass the map's own pointer, which the erase frees.
  static void remove(State& st, std::shared_ptr<Record> rec, std::string reason, Deferred& out);
  static WorkerEvent make_event(const Record& rec, WorkerState from, std::string reason = {});
  static WorkerSnapshot snapshot_of(const Record& rec);
  static Result<void> check(const WorkerInfo& info);
  static Error not_registered(std::string_view id);

  std::shared_ptr<State> state_;
};

/// The thread-safe pool.
using WorkerPool = BasicWorkerPool<std::mutex>;
/// A pool used from a single thread (or strand): no locking.
using WorkerPoolSt = BasicWorkerPool<detail::null_mutex>;

// Member templates: instantiated per completion handler, so always here.
template <class Mutex>
template <class Handler>
void BasicWorkerPool<Mutex>::initiate_acquire(Handler handler, Labels labels, std::uint8_t priority) {
  auto slot = asio::get_associated_cancellation_slot(handler);
  std::unique_lock lock(state_->mutex);
  if (state_->stopped) {
    lock.unlock();
    CompletionHandler<void(std::error_code, Lease)>(std::move(handler), state_->executor)
        .complete(errc::pool_stopped, Lease{});
    return;
  }
  if (Record* rec = find_free(*state_, labels)) {
    take_slot(*state_, *rec);
    Lease lease(state_, rec->shared_from_this());
    lock.unlock();
    auto executor = asio::get_associated_executor(handler, state_->executor);
    asio::post(executor, [h = std::move(handler), l = std::move(lease)]() mutable {
      std::move(h)(std::error_code{}, std::move(l));
    });
    return;
  }
  const std::uint64_t id = state_->next_waiter_id++;
  // After every waiter of this priority or higher: FIFO among equals.
  auto before = state_->waiters.end();
  while (before != state_->waiters.begin() && std::prev(before)->priority < priority) --before;
  state_->waiters.insert(before, Waiter{id, priority, std::move(labels), {std::move(handler), state_->executor}});
  lock.unlock();
  // Same thread or strand as any emit on this slot (see async_acquire).
  if (slot.is_connected()) slot.template emplace<CancelWaiter>(state_, id);
}

#ifndef BLACKTREE_HEADER_ONLY
extern template class BasicWorkerPool<std::mutex>;
extern template class BasicWorkerPool<detail::null_mutex>;
#endif

static_assert(LeasePool<WorkerPool>);
static_assert(LeasePool<WorkerPoolSt>);

}  // namespace blacktree::core

#ifdef BLACKTREE_HEADER_ONLY
#include <blacktree/core/worker_pool-inl.hpp>
#endif
