// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "queue_depth.hpp"

namespace blacktree::service {

QueueDepth::QueueDepth(amqp::AmqpOptions options, std::chrono::seconds max_age)
    : options_(std::move(options)), max_age_(max_age) {
  options_.log = nullptr;  // what goes wrong is kept for last_error(), not logged on every scrape
}

std::optional<QueueDepth::Reading> QueueDepth::get() {
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  if (now - last_try_ < max_age_) {
    if (reading_ && std::chrono::system_clock::now() - reading_->at < 2 * max_age_) return reading_;
    return std::nullopt;
  }
  last_try_ = now;
  if (!open_) {
    // One address per try, so a node that does not answer costs one connect timeout.
    if (auto opened = client_.open(options_, "queue depth", 1); !opened) {
      error_ = opened.error().message();
      return std::nullopt;
    }
    open_ = true;
  }
  auto counts = client_.queue_counts(options_.execute_queue);
  if (!counts) {
    error_ = counts.error().message();
    client_.close();  // the channel may be closed, the node gone: open again (the next node) next time
    open_ = false;
    return std::nullopt;
  }
  error_.clear();
  reading_ = Reading{*counts, std::chrono::system_clock::now()};
  return reading_;
}

std::string QueueDepth::last_error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

}  // namespace blacktree::service
