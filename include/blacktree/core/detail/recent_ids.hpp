// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace blacktree::core::detail {

/// Ids seen recently, each with a value: an id is kept `ttl` from its last
/// put, and at most `capacity` ids are kept (the oldest go first; ids put
/// again, and erased ids until their time is up, count against twice that).
/// Not thread-safe (the dispatcher keeps its records on its strand).
///
/// On the dispatcher's path of every job (one find when it arrives, one put
/// when its status is out), so it is laid out for few cache misses: the
/// records sit in put order in one deque (which owns the ids), and an
/// open-addressing index of (hash, record) pairs finds them. A find of an id
/// that is not kept usually reads one line of the index and nothing else.
/// An erased id stays as a tombstone until the order reaches it.
template <class Value>
class RecentIds {
 public:
  using Clock = std::chrono::steady_clock;

  RecentIds(std::size_t capacity, std::chrono::milliseconds ttl) : capacity_(capacity), ttl_(ttl) {}

  /// Keeps nothing when capacity or ttl is 0.
  void put(const std::string& id, Value value) {
    if (capacity_ == 0 || ttl_.count() <= 0) return;
    const auto now = Clock::now();
    const std::size_t hash = std::hash<std::string>{}(id);
    const auto [place, found] = lookup(id, hash);
    if (found) {
      Record& earlier = record(index_[place]);
      earlier.current = false;  // its place in the order stays, and no longer counts
      if (earlier.erased) ++live_;
    } else {
      index_[place].hash = hash;
      ++used_;
      ++live_;
    }
    order_.push_back(Record{id, hash, now, std::move(value), false, true});
    index_[place].sequence = base_ + order_.size();  // the record's sequence number, + 1
    trim(now);
    if (used_ * 2 > index_.size()) grow();
  }

  /// The id's value, or null when it is not (or no longer) kept.
  const Value* find(const std::string& id) {
    if (live_ == 0) return nullptr;
    const auto [place, found] = lookup(id, std::hash<std::string>{}(id));
    if (!found) return nullptr;
    const Record& r = record(index_[place]);
    if (r.erased || Clock::now() - r.at >= ttl_) return nullptr;
    return &r.value;
  }

  void erase(const std::string& id) {
    if (live_ == 0) return;
    const auto [place, found] = lookup(id, std::hash<std::string>{}(id));
    if (!found) return;
    Record& r = record(index_[place]);
    if (r.erased) return;
    r.erased = true;
    r.value = Value{};
    --live_;
  }

 private:
  struct Record {
    std::string id;
    std::size_t hash;
    Clock::time_point at;
    Value value;
    bool erased;   // a tombstone: not found, kept until the order reaches it
    bool current;  // the id's latest put (the one the index points at)
  };
  struct Slot {
    std::size_t hash = 0;
    std::uint64_t sequence = 0;  // the record's sequence number + 1; 0: empty
  };

  Record& record(const Slot& slot) { return order_[static_cast<std::size_t>(slot.sequence - 1 - base_)]; }

  // The slot of `id`'s current record, or the empty slot where it would go.
  std::pair<std::size_t, bool> lookup(const std::string& id, std::size_t hash) {
    if (index_.empty()) index_.resize(16);
    const std::size_t mask = index_.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& slot = index_[i];
      if (slot.sequence == 0) return {i, false};
      if (slot.hash == hash && record(slot).id == id) return {i, true};
    }
  }

  void trim(Clock::time_point now) {
    while (!order_.empty() && (now - order_.front().at >= ttl_ || live_ > capacity_ ||
                               order_.size() > 2 * capacity_)) {
      const Record& oldest = order_.front();
      if (oldest.current) {
        if (!oldest.erased) --live_;
        remove(lookup(oldest.id, oldest.hash).first);
      }
      order_.pop_front();
      ++base_;
    }
  }

  // Empties slot `i` and moves later entries of its probe run back, so that
  // every entry stays reachable from its home slot without tombstones.
  void remove(std::size_t i) {
    const std::size_t mask = index_.size() - 1;
    for (std::size_t j = i;;) {
      index_[i] = Slot{};
      for (;;) {
        j = (j + 1) & mask;
        if (index_[j].sequence == 0) {
          --used_;
          return;
        }
        const std::size_t home = index_[j].hash & mask;
        // Stays when its home lies cyclically in (i, j].
        const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) break;
      }
      index_[i] = index_[j];
      i = j;
    }
  }

  void grow() {
    std::vector<Slot> old(index_.size() * 2);
    old.swap(index_);
    const std::size_t mask = index_.size() - 1;
    for (const Slot& slot : old) {
      if (slot.sequence == 0) continue;
      std::size_t i = slot.hash & mask;
      while (index_[i].sequence != 0) i = (i + 1) & mask;
      index_[i] = slot;
    }
  }

  std::size_t capacity_;
  std::chrono::milliseconds ttl_;
  std::size_t live_ = 0;  // current records not erased
  std::size_t used_ = 0;  // occupied slots of the index (one per id with a current record)
  std::deque<Record> order_;  // oldest first; may hold earlier records of ids put again
  std::uint64_t base_ = 0;    // the sequence number of order_.front()
  std::vector<Slot> index_;   // open addressing, linear probing; a power of two, at most half full
};

}  // namespace blacktree::core::detail
