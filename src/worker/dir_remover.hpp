// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Removes finished jobs' directories on a thread of its own, once their
// results are out: a clone of thousands of files takes seconds to remove, and
// neither the status nor the slot waits for that. The disk waits instead: a
// job about to make its directory waits for the removals only while the file
// system is short of space (wait_for_space).

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string_view>
#include <thread>

namespace blacktree::worker::detail {

class DirRemover {
 public:
  /// `on_event` is told of a directory that could not be removed (may be empty).
  explicit DirRemover(std::function<void(std::string_view)> on_event);
  /// Removes what is still queued, then returns.
  ~DirRemover();
  DirRemover(const DirRemover&) = delete;
  DirRemover& operator=(const DirRemover&) = delete;

  void remove(std::filesystem::path dir);
  /// Blocks while directories wait for removal and the file system holding
  /// `where` has less than `floor` bytes free (0: never blocks).
  void wait_for_space(const std::filesystem::path& where, std::uint64_t floor);
  /// Blocks until every directory queued so far is removed (or failed to be).
  void settle();

 private:
  void loop(std::stop_token stop);

  std::function<void(std::string_view)> on_event_;
  std::mutex mutex_;
  std::condition_variable_any changed_;
  std::deque<std::filesystem::path> queue_;
  bool busy_ = false;  // a removal is under way
  std::jthread thread_;  // last: started once the rest exists
};

}  // namespace blacktree::worker::detail
