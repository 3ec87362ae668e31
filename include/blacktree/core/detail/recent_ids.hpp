// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

namespace blacktree::core::detail {

/// Ids seen recently, each with a value: an id is kept `ttl` from its last
/// put, and at most `capacity` ids are kept (the oldest go first; ids put
/// again, and erased ids until their time is up, count against twice that).
/// Not thread-safe (the dispatcher keeps its records on its strand).
///
/// On the dispatcher's path of every job (one find when it arrives, one put
/// when its status is out), so: the order list points at the map's own keys
/// (no second copy of each id), an erased id stays as a tombstone until the
/// list reaches it (so no pointer dangles), and find() only checks the one
/// entry it finds; put() does the trimming.
template <class Value>
class RecentIds {
 public:
  using Clock = std::chrono::steady_clock;

  RecentIds(std::size_t capacity, std::chrono::milliseconds ttl) : capacity_(capacity), ttl_(ttl) {}

  /// Keeps nothing when capacity or ttl is 0.
  void put(const std::string& id, Value value) {
    if (capacity_ == 0 || ttl_.count() <= 0) return;
    const auto now = Clock::now();
    auto [it, inserted] = entries_.try_emplace(id);
    if (inserted || it->second.erased) ++live_;
    it->second = Entry{now, ++puts_, std::move(value), false};
    order_.push_back(Placed{&it->first, puts_, now});
    trim(now);
  }

  /// The id's value, or null when it is not (or no longer) kept.
  const Value* find(const std::string& id) {
    if (live_ == 0) return nullptr;
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.erased || Clock::now() - it->second.at >= ttl_) return nullptr;
    return &it->second.value;
  }

  void erase(const std::string& id) {
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.erased) return;
    it->second.erased = true;
    it->second.value = Value{};
    --live_;
  }

 private:
  struct Entry {
    Clock::time_point at;
    std::uint64_t put;  // which put() it was
    Value value;
    bool erased = false;
  };
  struct Placed {
    const std::string* id;  // the key of its entry, which lives until its last Placed goes
    std::uint64_t put;
    Clock::time_point at;
  };

  void trim(Clock::time_point now) {
    while (!order_.empty() && (now - order_.front().at >= ttl_ || live_ > capacity_ ||
                               order_.size() > 2 * capacity_)) {
      const Placed oldest = order_.front();
      order_.pop_front();
      // An entry put again since keeps its later place in the order.
      auto it = entries_.find(*oldest.id);
      if (it == entries_.end() || it->second.put != oldest.put) continue;
      if (!it->second.erased) --live_;
      entries_.erase(it);
    }
  }

  std::size_t capacity_;
  std::chrono::milliseconds ttl_;
  std::size_t live_ = 0;  // entries not erased
  std::uint64_t puts_ = 0;
  std::unordered_map<std::string, Entry> entries_;
  std::deque<Placed> order_;  // oldest first; may hold stale places of ids put again
};

}  // namespace blacktree::core::detail
