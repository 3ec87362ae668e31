// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <array>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <limits>
#include <utility>
#include <vector>

namespace blacktree::core::detail {

/// Deadlines of objects that know their own place in the heap: setting,
/// moving and removing one is O(log n) with no search, and (once the vector
/// has grown) no allocation. An object has up to `Kinds` deadlines, one of
/// each kind; it keeps their places in a member
/// `std::array<std::size_t, Kinds> deadline_places` that starts as
/// `unplaced()` and is only written by the heap. Every object must be removed
/// (or the heap cleared) before it is destroyed. Not thread-safe.
///
/// The dispatcher keeps every running job's accept and run deadlines here
/// under one timer instead of arming, and cancelling, an asio timer per job:
/// that cost a timerfd_settime system call and a posted cancellation per job.
template <class T, std::size_t Kinds>
class DeadlineHeap {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();

  struct Entry {
    Clock::time_point at;
    T* item;
    std::size_t kind;
  };

  static constexpr std::array<std::size_t, Kinds> unplaced() {
    std::array<std::size_t, Kinds> places{};
    places.fill(npos);
    return places;
  }

  /// Sets (or moves) `item`'s deadline of `kind` to `at`.
  void set(T& item, std::size_t kind, Clock::time_point at) {
    std::size_t& place = item.deadline_places[kind];
    if (place == npos) {
      place = heap_.size();
      heap_.push_back(Entry{at, &item, kind});
    } else {
      heap_[place].at = at;
    }
    restore(place);
  }

  /// Removes `item`'s deadline of `kind`, if it has one.
  void remove(T& item, std::size_t kind) {
    const std::size_t place = item.deadline_places[kind];
    if (place == npos) return;
    item.deadline_places[kind] = npos;
    const std::size_t last = heap_.size() - 1;
    if (place != last) {
      heap_[place] = heap_[last];
      heap_[place].item->deadline_places[heap_[place].kind] = place;
    }
    heap_.pop_back();
    if (place < heap_.size()) restore(place);
  }

  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }
  /// The earliest deadline; the heap must not be empty.
  const Entry& top() const {
    assert(!heap_.empty());
    return heap_.front();
  }

  /// Removes and returns the earliest deadline; the heap must not be empty.
  Entry pop() {
    const Entry earliest = top();
    remove(*earliest.item, earliest.kind);
    return earliest;
  }

  void clear() {
    for (const Entry& e : heap_) e.item->deadline_places[e.kind] = npos;
    heap_.clear();
  }

 private:
  // The entry at `place` changed: moves it up or down to where it belongs.
  void restore(std::size_t place) {
    while (place > 0) {
      const std::size_t parent = (place - 1) / 2;
      if (!(heap_[place].at < heap_[parent].at)) break;
      swap_places(place, parent);
      place = parent;
    }
    for (;;) {
      const std::size_t left = 2 * place + 1;
      if (left >= heap_.size()) break;
      const std::size_t right = left + 1;
      const std::size_t child = right < heap_.size() && heap_[right].at < heap_[left].at ? right : left;
      if (!(heap_[child].at < heap_[place].at)) break;
      swap_places(place, child);
      place = child;
    }
  }

  void swap_places(std::size_t a, std::size_t b) {
    std::swap(heap_[a], heap_[b]);
    heap_[a].item->deadline_places[heap_[a].kind] = a;
    heap_[b].item->deadline_places[heap_[b].kind] = b;
  }

  std::vector<Entry> heap_;
};

}  // namespace blacktree::core::detail
