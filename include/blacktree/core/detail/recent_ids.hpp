// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

namespace blacktree::core::detail {

/// Ids seen recently, each with a value: an id is kept `ttl` from its last
/// put, and at most `capacity` ids are kept (the oldest go first; ids put
/// again and erased count against twice that until they expire). Not
/// thread-safe (the dispatcher keeps its records on its strand).
template <class Value>
class RecentIds {
 public:
  using Clock = std::chrono::steady_clock;

  RecentIds(std::size_t capacity, std::chrono::milliseconds ttl) : capacity_(capacity), ttl_(ttl) {}

  /// Keeps nothing when capacity or ttl is 0.
  void put(const std::string& id, Value value) {
    if (capacity_ == 0 || ttl_.count() <= 0) return;
    const auto now = Clock::now();
    entries_[id] = Entry{now, std::move(value)};
    order_.emplace_back(id, now);
    trim(now);
  }

  /// The id's value, or null when it is not (or no longer) kept.
  const Value* find(const std::string& id) {
    trim(Clock::now());
    auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : &it->second.value;
  }

  void erase(const std::string& id) { entries_.erase(id); }

 private:
  struct Entry {
    Clock::time_point at;
    Value value;
  };

  void trim(Clock::time_point now) {
    while (!order_.empty() && (now - order_.front().second >= ttl_ || entries_.size() > capacity_ ||
                               order_.size() > 2 * capacity_)) {
      auto& [id, at] = order_.front();
      // An entry put again since keeps its later position in the order.
      if (auto it = entries_.find(id); it != entries_.end() && it->second.at == at) entries_.erase(it);
      order_.pop_front();
    }
  }

  std::size_t capacity_;
  std::chrono::milliseconds ttl_;
  std::unordered_map<std::string, Entry> entries_;
  std::deque<std::pair<std::string, Clock::time_point>> order_;  // oldest first; may hold stale pairs
};

}  // namespace blacktree::core::detail
