// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <blacktree/core/completion_handler.hpp>

#include <atomic>
#include <cstddef>
#include <memory>
#include <system_error>
#include <utility>
#include <vector>

namespace blacktree::core {

/// What a status sink keeps for one status until the status is settled: the
/// handler of an async_publish, or the status's place in an
/// async_publish_some (see PublishesBatches). A sink stores one per status
/// and completes each when its confirm (or failure) comes, whichever call it
/// came from; a batch's handler then runs once, when its last status is
/// settled, with one code per status in the order they were given.
///
///     // async_publish:      queue.push_back({r, PublishCompletion(std::move(handler))});
///     // async_publish_some: auto parts = PublishCompletion::batch(rs.size(), std::move(handler));
///     ... later, from any thread: part.complete(ec);
class PublishCompletion {
 public:
  using Single = CompletionHandler<void(std::error_code)>;
  using Batch = CompletionHandler<void(std::vector<std::error_code>)>;

  /// Empty: settles nothing.
  PublishCompletion() = default;
  explicit PublishCompletion(Single handler) : single_(std::move(handler)) {}

  /// One completion per status of a batch of `n` (n >= 1), in order; `handler`
  /// runs once every one of them has been completed.
  static std::vector<PublishCompletion> batch(std::size_t n, Batch handler) {
    auto shared = std::make_shared<Shared>(n, std::move(handler));
    std::vector<PublishCompletion> parts(n);
    for (std::size_t i = 0; i < n; ++i) {
      parts[i].batch_ = shared;
      parts[i].index_ = i;
    }
    return parts;
  }

  /// Settles this status with `ec` and leaves *this empty. From any thread;
  /// the parts of one batch may be completed from different threads.
  void complete(std::error_code ec) {
    if (!batch_) {
      single_.complete(ec);
      return;
    }
    auto shared = std::move(batch_);
    shared->codes[index_] = ec;
    // acq_rel: the last part to settle sees every other part's code.
    if (shared->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) shared->handler.complete(std::move(shared->codes));
  }

 private:
  struct Shared {
    Shared(std::size_t n, Batch h) : codes(n), remaining(n), handler(std::move(h)) {}
    std::vector<std::error_code> codes;
    std::atomic<std::size_t> remaining;
    Batch handler;
  };

  Single single_;
  std::shared_ptr<Shared> batch_;
  std::size_t index_ = 0;
};

}  // namespace blacktree::core
