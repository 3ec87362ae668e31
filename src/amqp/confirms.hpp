// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Private to src/amqp: what became of each `mandatory` publish on a channel
// in confirm mode. RabbitMQ confirms a message that no queue took as well
// (basic.ack), after returning it (basic.return): only the return tells that
// it went nowhere. A return carries no delivery tag, so every publish names
// itself in a header, and the return's content header is matched by it.

#include "connection.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace blacktree::amqp::detail {

/// The header a tracked publish carries: its delivery tag on its channel.
inline constexpr char publish_seq_header[] = "x-blacktree-publish-seq";

enum class PublishOutcome : std::uint8_t {
  confirmed,  ///< basic.ack, not returned: a queue has it
  returned,   ///< basic.return then basic.ack: no queue took it
  refused,    ///< basic.nack
};

inline amqp_table_entry_t publish_seq_entry(std::uint64_t seq) {
  amqp_table_entry_t entry{};
  entry.key = amqp_cstring_bytes(publish_seq_header);
  entry.value.kind = AMQP_FIELD_KIND_I64;
  entry.value.value.i64 = static_cast<std::int64_t>(seq);
  return entry;
}

template <class T>
class PublishConfirms {
 public:
  struct Settled {
    T value;
    PublishOutcome outcome;
  };

  /// For a channel just put in confirm mode: delivery tags start at 1 again.
  void reset() {
    seq_ = 0;
    pending_.clear();
    awaiting_header_ = false;
  }
  /// The delivery tag the next publish gets: what its publish_seq_entry carries.
  std::uint64_t next_seq() const noexcept { return seq_ + 1; }
  /// A publish went out (with publish_seq_entry(next_seq())).
  void published(T value) { pending_.emplace(++seq_, Entry{std::move(value), false}); }
  bool empty() const noexcept { return pending_.empty(); }
  /// "312 NO_ROUTE" for the last return, for a person.
  const std::string& last_return() const noexcept { return last_return_; }

  /// Every frame of the publishing channel that is not a confirm: notes a
  /// basic.return and marks the publish its content header names.
  void on_frame(const amqp_frame_t& frame) {
    if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
      const auto* m = static_cast<const amqp_basic_return_t*>(frame.payload.method.decoded);
      last_return_ = std::to_string(m->reply_code) + " " + std::string(to_view(m->reply_text));
      awaiting_header_ = true;
      return;
    }
    if (frame.frame_type != AMQP_FRAME_HEADER || !awaiting_header_) return;
    awaiting_header_ = false;
    const auto* props = static_cast<const amqp_basic_properties_t*>(frame.payload.properties.decoded);
    if (!props || !(props->_flags & AMQP_BASIC_HEADERS_FLAG)) return;
    for (int i = 0; i < props->headers.num_entries; ++i) {
      const amqp_table_entry_t& e = props->headers.entries[i];
      if (to_view(e.key) != publish_seq_header || e.value.kind != AMQP_FIELD_KIND_I64) continue;
      if (auto it = pending_.find(static_cast<std::uint64_t>(e.value.value.i64)); it != pending_.end())
        it->second.returned = true;
    }
  }

  /// basic.ack (`ack`) or basic.nack up to `tag`: the publishes it settles.
  std::vector<Settled> on_confirm(std::uint64_t tag, bool multiple, bool ack) {
    std::vector<Settled> settled;
    auto end = pending_.upper_bound(tag);
    auto begin = multiple ? pending_.begin() : pending_.find(tag);
    if (begin == pending_.end() || begin->first > tag) return settled;
    for (auto it = begin; it != end; ++it) {
      const PublishOutcome outcome =
          !ack ? PublishOutcome::refused : it->second.returned ? PublishOutcome::returned : PublishOutcome::confirmed;
      settled.push_back({std::move(it->second.value), outcome});
    }
    pending_.erase(begin, end);
    return settled;
  }

  /// What is unconfirmed, for a connection that is gone.
  std::vector<T> take_all() {
    std::vector<T> all;
    for (auto& [seq, entry] : pending_) all.push_back(std::move(entry.value));
    pending_.clear();
    awaiting_header_ = false;
    return all;
  }

 private:
  struct Entry {
    T value;
    bool returned;
  };
  std::uint64_t seq_ = 0;
  std::map<std::uint64_t, Entry> pending_;
  bool awaiting_header_ = false;
  std::string last_return_;
};

}  // namespace blacktree::amqp::detail
