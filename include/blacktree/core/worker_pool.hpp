// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <blacktree/core/detail/erased_handler.hpp>
#include <blacktree/core/error.hpp>
#include <blacktree/core/job.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/error.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
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

/// A mutex that does nothing, for a pool used from one thread (WorkerPoolSt).
struct null_mutex {
  void lock() noexcept {}
  void unlock() noexcept {}
  bool try_lock() noexcept { return true; }
};

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
  /// The same live incarnation registering again only updates its details.
  std::error_code register_worker(WorkerInfo info);

  /// Changes a live worker's address, labels, capacity or version in place.
  std::error_code update_worker(WorkerInfo info);

  /// The worker answered (registration probe or ping). `registering` and
  /// `dead` become free. A non-empty `incarnation` that differs from the known
  /// one means the worker restarted: its leases are void.
  std::error_code mark_alive(std::string_view id, std::string_view incarnation = {});

  /// The worker stopped answering: out of the free set, its leases void.
  std::error_code mark_dead(std::string_view id, std::string reason);

  /// Takes no new jobs; running ones finish. `resume` undoes it.
  std::error_code drain(std::string_view id);
  std::error_code resume(std::string_view id);

  /// Forgets the worker. Its outstanding leases are void.
  std::error_code deregister(std::string_view id, std::string reason);

  /// Leases a slot of a live worker offering every label in `required`.
  /// Completion: `void(std::error_code, Lease)`; errc::pool_stopped after
  /// stop(); asio::error::operation_aborted when cancelled through the
  /// handler's cancellation slot (which must be emitted from the thread or
  /// strand that called async_acquire).
  template <class Token>
  auto async_acquire(Labels required, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, Lease)>(
        [this](auto handler, Labels labels) { initiate_acquire(std::move(handler), std::move(labels)); },
        token, std::move(required));
  }

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
    bool listed = false;
    typename std::list<Record*>::iterator position{};
    std::chrono::steady_clock::time_point last_seen{};
  };

  struct Waiter {
    std::uint64_t id = 0;
    Labels labels;
    detail::erased_handler<void(std::error_code, Lease)> handler;
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
    std::list<Record*> free_list;  // live, non-draining, with a free slot; round-robin order
    std::list<Waiter> waiters;     // FIFO
    std::uint64_t next_waiter_id = 1;
    std::map<std::uint64_t, std::shared_ptr<Listener>> listeners;
    std::uint64_t next_listener_id = 1;
    bool stopped = false;
    std::atomic<std::size_t> alive_capacity{0};
  };

  // Work collected under the lock, done after it is released.
  struct Deferred {
    std::vector<std::pair<detail::erased_handler<void(std::error_code, Lease)>, Lease>> grants;
    std::vector<detail::erased_handler<void(std::error_code, Lease)>> failures;
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
  void initiate_acquire(Handler handler, Labels labels);

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
  static void apply_update(const std::shared_ptr<State>& st, const std::shared_ptr<Record>& rec, WorkerInfo info,
                           Deferred& out);
  static void finish(const std::shared_ptr<State>& st, Deferred& deferred);
  static WorkerEvent make_event(const Record& rec, WorkerState from, std::string reason = {});
  static WorkerSnapshot snapshot_of(const Record& rec);

  std::shared_ptr<State> state_;
};

/// The thread-safe pool.
using WorkerPool = BasicWorkerPool<std::mutex>;
/// A pool used from a single thread (or strand): no locking.
using WorkerPoolSt = BasicWorkerPool<null_mutex>;

// ---------------------------------------------------------------------------
// Implementation

template <class Mutex>
bool BasicWorkerPool<Mutex>::Lease::current() const {
  if (!state_) return false;
  std::lock_guard lock(state_->mutex);
  return !record_->removed && record_->generation == generation_ && holds_leases(record_->state);
}

template <class Mutex>
void BasicWorkerPool<Mutex>::Lease::release() noexcept {
  if (!state_) return;
  auto state = std::move(state_);
  auto record = std::move(record_);
  info_.reset();
  Deferred deferred;
  {
    std::lock_guard lock(state->mutex);
    // A voided lease's slot was reclaimed when the worker died, restarted or left.
    if (record->removed || record->generation != generation_ || !holds_leases(record->state)) return;
    --record->in_use;
    if (record->state != WorkerState::draining) {
      if (!state->waiters.empty()) offer_slots(state, record, deferred);
      refresh(*state, *record);
    }
  }
  finish(state, deferred);
}

template <class Mutex>
void BasicWorkerPool<Mutex>::Subscription::reset() noexcept {
  if (auto state = state_.lock()) {
    std::lock_guard lock(state->mutex);
    state->listeners.erase(id_);
  }
  state_.reset();
}

template <class Mutex>
void BasicWorkerPool<Mutex>::CancelWaiter::operator()(asio::cancellation_type type) {
  if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
               asio::cancellation_type::total)) == asio::cancellation_type::none)
    return;
  auto state = state_.lock();
  if (!state) return;
  detail::erased_handler<void(std::error_code, Lease)> handler;
  {
    std::lock_guard lock(state->mutex);
    for (auto it = state->waiters.begin(); it != state->waiters.end(); ++it) {
      if (it->id == id_) {
        handler = std::move(it->handler);
        state->waiters.erase(it);
        break;
      }
    }
  }
  if (handler) handler.complete(asio::error::operation_aborted, Lease{});
}

template <class Mutex>
template <class Handler>
void BasicWorkerPool<Mutex>::initiate_acquire(Handler handler, Labels labels) {
  auto slot = asio::get_associated_cancellation_slot(handler);
  std::unique_lock lock(state_->mutex);
  if (state_->stopped) {
    lock.unlock();
    detail::erased_handler<void(std::error_code, Lease)>(std::move(handler), state_->executor)
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
  state_->waiters.push_back(
      Waiter{id, std::move(labels), {std::move(handler), state_->executor}});
  lock.unlock();
  // Same thread or strand as any emit on this slot (see async_acquire).
  if (slot.is_connected()) slot.template emplace<CancelWaiter>(state_, id);
}

template <class Mutex>
typename BasicWorkerPool<Mutex>::Record* BasicWorkerPool<Mutex>::find_free(State& st, const Labels& required) noexcept {
  if (required.empty()) return st.free_list.empty() ? nullptr : st.free_list.front();
  for (Record* rec : st.free_list)
    if (labels_match(required, rec->info->labels)) return rec;
  return nullptr;
}

template <class Mutex>
void BasicWorkerPool<Mutex>::set_state(State& st, Record& rec, WorkerState next) {
  const bool was = counts_as_capacity(rec.state);
  const bool now = counts_as_capacity(next);
  if (was && !now) st.alive_capacity.fetch_sub(rec.info->capacity, std::memory_order_acq_rel);
  if (!was && now) st.alive_capacity.fetch_add(rec.info->capacity, std::memory_order_acq_rel);
  rec.state = next;
}

// Derives free/busy from the slots in use and keeps free-list membership exact:
// listed if and only if live, not draining, and with a free slot.
template <class Mutex>
void BasicWorkerPool<Mutex>::refresh(State& st, Record& rec) {
  if (counts_as_capacity(rec.state))
    set_state(st, rec, rec.in_use < rec.info->capacity ? WorkerState::free : WorkerState::busy);
  const bool should_list = rec.state == WorkerState::free && !rec.removed;
  if (should_list && !rec.listed) {
    rec.position = st.free_list.insert(st.free_list.end(), &rec);
    rec.listed = true;
  } else if (!should_list && rec.listed) {
    st.free_list.erase(rec.position);
    rec.listed = false;
  }
}

template <class Mutex>
void BasicWorkerPool<Mutex>::take_slot(State& st, Record& rec) {
  ++rec.in_use;
  refresh(st, rec);
  if (rec.listed) st.free_list.splice(st.free_list.end(), st.free_list, rec.position);  // round robin
}

template <class Mutex>
void BasicWorkerPool<Mutex>::offer_slots(const std::shared_ptr<State>& st, const std::shared_ptr<Record>& rec,
                                         Deferred& out) {
  auto it = st->waiters.begin();
  while (counts_as_capacity(rec->state) && rec->in_use < rec->info->capacity && it != st->waiters.end()) {
    if (!labels_match(it->labels, rec->info->labels)) {
      ++it;
      continue;
    }
    take_slot(*st, *rec);
    out.grants.emplace_back(std::move(it->handler), Lease(st, rec));
    it = st->waiters.erase(it);
  }
}

template <class Mutex>
void BasicWorkerPool<Mutex>::void_leases(State& st, Record& rec, WorkerEvent& event) {
  if (holds_leases(rec.state) && rec.in_use > 0) {
    event.leases_lost = true;
    event.lost_generation = rec.generation;
  }
  ++rec.generation;
  rec.in_use = 0;
  (void)st;
}

template <class Mutex>
WorkerEvent BasicWorkerPool<Mutex>::make_event(const Record& rec, WorkerState from, std::string reason) {
  WorkerEvent event;
  event.info = rec.info;
  event.from = from;
  event.to = rec.state;
  event.reason = std::move(reason);
  return event;
}

template <class Mutex>
WorkerSnapshot BasicWorkerPool<Mutex>::snapshot_of(const Record& rec) {
  return WorkerSnapshot{rec.info, rec.state, rec.in_use, rec.generation, rec.last_seen};
}

template <class Mutex>
void BasicWorkerPool<Mutex>::finish(const std::shared_ptr<State>& st, Deferred& deferred) {
  for (auto& [handler, lease] : deferred.grants) handler.complete(std::error_code{}, std::move(lease));
  for (auto& handler : deferred.failures) handler.complete(deferred.failure_code, Lease{});
  if (deferred.events.empty()) return;
  std::vector<std::shared_ptr<Listener>> listeners;
  {
    std::lock_guard lock(st->mutex);
    listeners.reserve(st->listeners.size());
    for (auto& [id, listener] : st->listeners) listeners.push_back(listener);
  }
  for (const auto& event : deferred.events)
    for (const auto& listener : listeners) (*listener)(event);
}

template <class Mutex>
std::error_code BasicWorkerPool<Mutex>::register_worker(WorkerInfo info) {
  if (info.id.empty() || info.address.empty() || info.capacity == 0) return errc::invalid_worker;
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopped) return errc::pool_stopped;
    auto it = state_->workers.find(info.id);
    if (it == state_->workers.end()) {
      auto rec = std::make_shared<Record>();
      rec->info = std::make_shared<const WorkerInfo>(std::move(info));
      rec->last_seen = std::chrono::steady_clock::now();
      state_->workers.emplace(rec->info->id, rec);
      auto event = make_event(*rec, WorkerState::registering, "registered");
      event.added = true;
      deferred.events.push_back(std::move(event));
    } else {
      auto& rec = *it->second;
      rec.last_seen = std::chrono::steady_clock::now();
      const WorkerState from = rec.state;
      if (info.incarnation != rec.info->incarnation || rec.state == WorkerState::dead) {
        WorkerEvent event;
        void_leases(*state_, rec, event);
        set_state(*state_, rec, WorkerState::registering);
        rec.info = std::make_shared<const WorkerInfo>(std::move(info));
        refresh(*state_, rec);
        auto changed = make_event(rec, from, "registered again");
        changed.leases_lost = event.leases_lost;
        changed.lost_generation = event.lost_generation;
        deferred.events.push_back(std::move(changed));
      } else {
        apply_update(state_, it->second, std::move(info), deferred);
      }
    }
  }
  finish(state_, deferred);
  return {};
}

// Same incarnation: new details in place; leases stay valid.
template <class Mutex>
void BasicWorkerPool<Mutex>::apply_update(const std::shared_ptr<State>& st, const std::shared_ptr<Record>& rec,
                                          WorkerInfo info, Deferred& out) {
  const bool counted = counts_as_capacity(rec->state);
  if (counted) st->alive_capacity.fetch_sub(rec->info->capacity, std::memory_order_acq_rel);
  rec->info = std::make_shared<const WorkerInfo>(std::move(info));
  if (counted) st->alive_capacity.fetch_add(rec->info->capacity, std::memory_order_acq_rel);
  offer_slots(st, rec, out);
  refresh(*st, *rec);
}

template <class Mutex>
std::error_code BasicWorkerPool<Mutex>::update_worker(WorkerInfo info) {
  if (info.id.empty() || info.address.empty() || info.capacity == 0) return errc::invalid_worker;
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(info.id);
    if (it == state_->workers.end()) return errc::unknown_worker;
    info.incarnation = it->second->info->incarnation;
    apply_update(state_, it->second, std::move(info), deferred);
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
std::error_code BasicWorkerPool<Mutex>::mark_alive(std::string_view id, std::string_view incarnation) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return errc::unknown_worker;
    auto& rec = it->second;
    rec->last_seen = std::chrono::steady_clock::now();
    const WorkerState from = rec->state;
    WorkerEvent lost;
    if (!incarnation.empty() && incarnation != rec->info->incarnation) {
      void_leases(*state_, *rec, lost);
      auto info = *rec->info;
      info.incarnation = std::string(incarnation);
      rec->info = std::make_shared<const WorkerInfo>(std::move(info));
    }
    if (rec->state == WorkerState::registering || rec->state == WorkerState::dead) {
      rec->in_use = 0;
      set_state(*state_, *rec, WorkerState::free);
    }
    if (from != rec->state || lost.leases_lost) {
      offer_slots(state_, rec, deferred);
      refresh(*state_, *rec);
      auto event = make_event(*rec, from, lost.leases_lost ? "restarted" : "answering");
      event.leases_lost = lost.leases_lost;
      event.lost_generation = lost.lost_generation;
      deferred.events.push_back(std::move(event));
    }
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
std::error_code BasicWorkerPool<Mutex>::mark_dead(std::string_view id, std::string reason) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return errc::unknown_worker;
    auto& rec = *it->second;
    if (rec.state == WorkerState::dead) return {};
    const WorkerState from = rec.state;
    WorkerEvent event;
    void_leases(*state_, rec, event);
    set_state(*state_, rec, WorkerState::dead);
    refresh(*state_, rec);
    auto changed = make_event(rec, from, std::move(reason));
    changed.leases_lost = event.leases_lost;
    changed.lost_generation = event.lost_generation;
    deferred.events.push_back(std::move(changed));
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
std::error_code BasicWorkerPool<Mutex>::drain(std::string_view id) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return errc::unknown_worker;
    auto& rec = *it->second;
    if (rec.state != WorkerState::free && rec.state != WorkerState::busy) return {};
    const WorkerState from = rec.state;
    set_state(*state_, rec, WorkerState::draining);
    refresh(*state_, rec);
    deferred.events.push_back(make_event(rec, from, "draining"));
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
std::error_code BasicWorkerPool<Mutex>::resume(std::string_view id) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return errc::unknown_worker;
    auto& rec = it->second;
    if (rec->state != WorkerState::draining) return {};
    set_state(*state_, *rec, WorkerState::free);
    offer_slots(state_, rec, deferred);
    refresh(*state_, *rec);
    deferred.events.push_back(make_event(*rec, WorkerState::draining, "resumed"));
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
std::error_code BasicWorkerPool<Mutex>::deregister(std::string_view id, std::string reason) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return errc::unknown_worker;
    auto rec = it->second;
    state_->workers.erase(it);
    const WorkerState from = rec->state;
    WorkerEvent event;
    void_leases(*state_, *rec, event);
    set_state(*state_, *rec, WorkerState::dead);
    rec->removed = true;
    refresh(*state_, *rec);
    auto removed = make_event(*rec, from, std::move(reason));
    removed.removed = true;
    removed.leases_lost = event.leases_lost;
    removed.lost_generation = event.lost_generation;
    deferred.events.push_back(std::move(removed));
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
void BasicWorkerPool<Mutex>::stop() {
  Deferred deferred;
  deferred.failure_code = errc::pool_stopped;
  {
    std::lock_guard lock(state_->mutex);
    state_->stopped = true;
    for (auto& waiter : state_->waiters) deferred.failures.push_back(std::move(waiter.handler));
    state_->waiters.clear();
  }
  finish(state_, deferred);
}

template <class Mutex>
typename BasicWorkerPool<Mutex>::Subscription BasicWorkerPool<Mutex>::subscribe(Listener listener) {
  std::lock_guard lock(state_->mutex);
  const auto id = state_->next_listener_id++;
  state_->listeners.emplace(id, std::make_shared<Listener>(std::move(listener)));
  return Subscription(state_, id);
}

template <class Mutex>
std::size_t BasicWorkerPool<Mutex>::size() const {
  std::lock_guard lock(state_->mutex);
  return state_->workers.size();
}

template <class Mutex>
std::size_t BasicWorkerPool<Mutex>::waiting() const {
  std::lock_guard lock(state_->mutex);
  return state_->waiters.size();
}

template <class Mutex>
std::optional<WorkerSnapshot> BasicWorkerPool<Mutex>::find(std::string_view id) const {
  std::lock_guard lock(state_->mutex);
  auto it = state_->workers.find(id);
  if (it == state_->workers.end()) return std::nullopt;
  return snapshot_of(*it->second);
}

template <class Mutex>
std::vector<WorkerSnapshot> BasicWorkerPool<Mutex>::snapshot() const {
  std::lock_guard lock(state_->mutex);
  std::vector<WorkerSnapshot> out;
  out.reserve(state_->workers.size());
  for (const auto& [id, rec] : state_->workers) out.push_back(snapshot_of(*rec));
  return out;
}

#ifndef BLACKTREE_HEADER_ONLY
extern template class BasicWorkerPool<std::mutex>;
extern template class BasicWorkerPool<null_mutex>;
#endif

}  // namespace blacktree::core
