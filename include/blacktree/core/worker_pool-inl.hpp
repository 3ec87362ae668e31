// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The bodies of BasicWorkerPool's members, spdlog style: the compiled library
// instantiates the two pools it ships (WorkerPool, WorkerPoolSt) once, in
// src/core/core.cpp, and worker_pool.hpp includes this file only with
// BLACKTREE_HEADER_ONLY. A program that instantiates BasicWorkerPool with a
// mutex of its own includes this file in one of its translation units.

#ifndef BLACKTREE_HEADER_ONLY
#include <blacktree/core/worker_pool.hpp>
#endif

namespace blacktree::core {

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
    if (record->leaving && record->in_use == 0) {
      remove(*state, record, record->leave_reason, deferred);
    } else if (record->state != WorkerState::draining) {
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
  CompletionHandler<void(std::error_code, Lease)> handler;
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
typename BasicWorkerPool<Mutex>::Record* BasicWorkerPool<Mutex>::find_free(State& st, const Labels& required) noexcept {
  if (required.empty()) return st.free_list.head;
  for (Record* rec = st.free_list.head; rec; rec = rec->free_next)
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
    st.free_list.push_back(rec);
    rec.listed = true;
  } else if (!should_list && rec.listed) {
    st.free_list.erase(rec);
    rec.listed = false;
  }
}

template <class Mutex>
void BasicWorkerPool<Mutex>::take_slot(State& st, Record& rec) {
  ++rec.in_use;
  refresh(st, rec);
  if (rec.listed) st.free_list.move_to_back(rec);  // round robin
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

// Out of the map and the free set for good; leases still out are void.
template <class Mutex>
void BasicWorkerPool<Mutex>::remove(State& st, std::shared_ptr<Record> rec, std::string reason, Deferred& out) {
  if (auto it = st.workers.find(rec->info->id); it != st.workers.end() && it->second == rec) st.workers.erase(it);
  const WorkerState from = rec->state;
  WorkerEvent event;
  void_leases(st, *rec, event);
  set_state(st, *rec, WorkerState::dead);
  rec->removed = true;
  rec->leaving = false;
  forget_carried(st, *rec);
  refresh(st, *rec);
  auto removed = make_event(*rec, from, std::move(reason));
  removed.removed = true;
  removed.leases_lost = event.leases_lost;
  removed.lost_generation = event.lost_generation;
  out.events.push_back(std::move(removed));
}

template <class Mutex>
Result<void> BasicWorkerPool<Mutex>::check(const WorkerInfo& info) {
  if (!info.id.empty() && !info.address.empty() && info.capacity > 0) return {};
  return Error{errc::invalid_worker, "a registration needs a non-empty id, an address and a capacity of at least 1 "
                                     "(got id '" + info.id + "', address '" + info.address + "', capacity " +
                                     std::to_string(info.capacity) + ")"};
}

template <class Mutex>
Error BasicWorkerPool<Mutex>::not_registered(std::string_view id) {
  return Error{errc::unknown_worker, "worker '" + std::string(id) + "' is not registered"};
}

template <class Mutex>
Result<void> BasicWorkerPool<Mutex>::register_worker(WorkerInfo info, std::vector<std::string> carried_jobs) {
  if (auto valid = check(info); !valid) return valid;
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopped)
      return Error{errc::pool_stopped, "the worker pool is stopped: worker '" + info.id + "' was not registered"};
    auto it = state_->workers.find(info.id);
    if (it == state_->workers.end()) {
      auto rec = std::make_shared<Record>();
      rec->info = std::make_shared<const WorkerInfo>(std::move(info));
      rec->last_seen = std::chrono::steady_clock::now();
      state_->workers.emplace(rec->info->id, rec);
      set_carried(*state_, rec, std::move(carried_jobs));
      auto event = make_event(*rec, WorkerState::registering, "registered");
      event.added = true;
      deferred.events.push_back(std::move(event));
    } else {
      auto& rec = *it->second;
      const bool same_process = !info.incarnation.empty() && info.incarnation == rec.info->incarnation;
      if (holds_leases(rec.state) && info.address != rec.info->address && !same_process)
        return Error{errc::duplicate_worker,
                     "worker id '" + info.id + "' is in use by a live worker at " + rec.info->address +
                         " (incarnation '" + rec.info->incarnation + "'); the process at " + info.address +
                         " (incarnation '" + info.incarnation +
                         "') is refused until that one stops answering pings or leaves: give each worker its "
                         "own id"};
      rec.last_seen = std::chrono::steady_clock::now();
      set_carried(*state_, it->second, std::move(carried_jobs));
      const WorkerState from = rec.state;
      if (rec.leaving && same_process) {  // changed its mind: stays
        rec.leaving = false;
        set_state(*state_, rec, WorkerState::free);
        refresh(*state_, rec);
        deferred.events.push_back(make_event(rec, from, "registered again while leaving: stays"));
      }
      if (info.incarnation != rec.info->incarnation || rec.state == WorkerState::dead) {
        rec.leaving = false;
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
Result<void> BasicWorkerPool<Mutex>::update_worker(WorkerInfo info) {
  if (auto valid = check(info); !valid) return valid;
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(info.id);
    if (it == state_->workers.end()) return not_registered(info.id);
    info.incarnation = it->second->info->incarnation;
    apply_update(state_, it->second, std::move(info), deferred);
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
Result<void> BasicWorkerPool<Mutex>::mark_alive(std::string_view id, std::string_view incarnation) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return not_registered(id);
    auto& rec = it->second;
    rec->last_seen = std::chrono::steady_clock::now();
    if (rec->leaving && !incarnation.empty() && incarnation != rec->info->incarnation) {
      // What it was finishing is gone with the old process; the new one registers by itself.
      remove(*state_, rec, "restarted while leaving (" + rec->leave_reason + ")", deferred);
    } else {
      mark_alive_locked(state_, rec, incarnation, deferred);
    }
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
void BasicWorkerPool<Mutex>::mark_alive_locked(const std::shared_ptr<State>& st, const std::shared_ptr<Record>& rec,
                                               std::string_view incarnation, Deferred& deferred) {
  {
    const WorkerState from = rec->state;
    WorkerEvent lost;
    if (!incarnation.empty() && incarnation != rec->info->incarnation) {
      void_leases(*st, *rec, lost);
      auto info = *rec->info;
      info.incarnation = std::string(incarnation);
      rec->info = std::make_shared<const WorkerInfo>(std::move(info));
    }
    if (rec->state == WorkerState::registering || rec->state == WorkerState::dead) {
      rec->in_use = 0;
      set_state(*st, *rec, WorkerState::free);
    }
    if (from != rec->state || lost.leases_lost) {
      offer_slots(st, rec, deferred);
      refresh(*st, *rec);
      auto event = make_event(*rec, from, lost.leases_lost ? "restarted" : "answering");
      event.leases_lost = lost.leases_lost;
      event.lost_generation = lost.lost_generation;
      deferred.events.push_back(std::move(event));
    }
  }
}

template <class Mutex>
Result<void> BasicWorkerPool<Mutex>::mark_dead(std::string_view id, std::string reason) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return not_registered(id);
    auto& rec = *it->second;
    if (rec.state == WorkerState::dead) return {};
    if (rec.leaving) {
      remove(*state_, it->second, std::move(reason), deferred);  // it was going anyway
    } else {
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
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
Result<void> BasicWorkerPool<Mutex>::drain(std::string_view id) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return not_registered(id);
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
Result<void> BasicWorkerPool<Mutex>::resume(std::string_view id) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return not_registered(id);
    auto& rec = it->second;
    if (rec->state != WorkerState::draining || rec->leaving) return {};  // a leave is undone by registering
    set_state(*state_, *rec, WorkerState::free);
    offer_slots(state_, rec, deferred);
    refresh(*state_, *rec);
    deferred.events.push_back(make_event(*rec, WorkerState::draining, "resumed"));
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
Result<void> BasicWorkerPool<Mutex>::deregister(std::string_view id, std::string reason) {
  Deferred deferred;
  {
    std::lock_guard lock(state_->mutex);
    auto it = state_->workers.find(id);
    if (it == state_->workers.end()) return not_registered(id);
    auto rec = it->second;
    if (holds_leases(rec->state) && rec->in_use > 0) {
      // Its jobs are finishing (a graceful stop): their results are still on
      // their way, so they keep their leases; it leaves with the last one.
      rec->leave_reason = std::move(reason);
      if (rec->leaving) return {};
      rec->leaving = true;
      const WorkerState from = rec->state;
      set_state(*state_, *rec, WorkerState::draining);
      refresh(*state_, *rec);
      deferred.events.push_back(make_event(
          *rec, from, "leaving after its " + std::to_string(rec->in_use) + " job(s) in flight: " + rec->leave_reason));
    } else {
      remove(*state_, rec, std::move(reason), deferred);
    }
  }
  finish(state_, deferred);
  return {};
}

template <class Mutex>
typename BasicWorkerPool<Mutex>::Lease BasicWorkerPool<Mutex>::try_acquire(const Labels& required) {
  std::lock_guard lock(state_->mutex);
  if (state_->stopped) return Lease{};
  Record* rec = find_free(*state_, required);
  if (!rec) return Lease{};
  take_slot(*state_, *rec);
  return Lease(state_, rec->shared_from_this());
}

template <class Mutex>
void BasicWorkerPool<Mutex>::forget_carried(State& st, Record& rec) {
  for (const auto& job_id : rec.carried)
    if (auto it = st.carriers.find(job_id); it != st.carriers.end() && it->second.get() == &rec) st.carriers.erase(it);
  rec.carried.clear();
  st.carried_count.store(st.carriers.size(), std::memory_order_release);
}

template <class Mutex>
void BasicWorkerPool<Mutex>::set_carried(State& st, const std::shared_ptr<Record>& rec,
                                         std::vector<std::string> job_ids) {
  forget_carried(st, *rec);
  for (const auto& job_id : job_ids) {
    auto [entry, added] = st.carriers.try_emplace(job_id, rec);
    if (!added && entry->second != rec) {
      std::erase(entry->second->carried, job_id);
      entry->second = rec;
    }
  }
  rec->carried = std::move(job_ids);
  st.carried_count.store(st.carriers.size(), std::memory_order_release);
}

template <class Mutex>
typename BasicWorkerPool<Mutex>::Lease BasicWorkerPool<Mutex>::claim(std::string_view job_id) {
  if (state_->carried_count.load(std::memory_order_acquire) == 0) return Lease{};
  std::lock_guard lock(state_->mutex);
  auto it = state_->carriers.find(job_id);
  if (it == state_->carriers.end()) return Lease{};
  const std::shared_ptr<Record> rec = it->second;
  if (!rec->removed && !holds_leases(rec->state)) return Lease{};  // registering or dead: later
  state_->carriers.erase(it);
  std::erase(rec->carried, job_id);
  state_->carried_count.store(state_->carriers.size(), std::memory_order_release);
  if (rec->removed || state_->stopped) return Lease{};
  take_slot(*state_, *rec);
  return Lease(state_, rec);
}

template <class Mutex>
std::vector<std::string> BasicWorkerPool<Mutex>::carried_job_ids() const {
  std::vector<std::string> ids;
  if (state_->carried_count.load(std::memory_order_acquire) == 0) return ids;
  std::lock_guard lock(state_->mutex);
  ids.reserve(state_->carriers.size());
  for (const auto& [job_id, rec] : state_->carriers) ids.push_back(job_id);
  return ids;
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

}  // namespace blacktree::core
