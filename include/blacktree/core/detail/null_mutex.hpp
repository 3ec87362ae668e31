// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

namespace blacktree::core::detail {

/// A mutex that does nothing: the locking policy of a pool used from one
/// thread or strand (WorkerPoolSt = BasicWorkerPool<detail::null_mutex>),
/// as spdlog's null_mutex is for its single-threaded sinks.
struct null_mutex {
  void lock() noexcept {}
  void unlock() noexcept {}
  bool try_lock() noexcept { return true; }
};

}  // namespace blacktree::core::detail
