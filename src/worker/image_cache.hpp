// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The budget of the image store a worker's jobs share: measured after each
// job off the job's path, pruned of its least recently used images when it
// outgrows the budget, never beside a running build.

#include <blacktree/worker/build_pipeline.hpp>

#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace blacktree::worker::detail {

class CacheKeeper {
 public:
  CacheKeeper(const BuildPipelineConfig& config, Builder::Store store);
  ~CacheKeeper();
  CacheKeeper(const CacheKeeper&) = delete;
  CacheKeeper& operator=(const CacheKeeper&) = delete;

  /// Held by a job for its whole run: taken once no prune is due or running.
  class Use {
   public:
    explicit Use(CacheKeeper& keeper);
    ~Use();
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    /// What the build used from the cache: the ids of the steps it took from
    /// it ("--> Using cache <id>") and the names of its base images.
    std::vector<std::string> used;
    /// False when the build may have left a container behind (it was killed:
    /// cancelled or timed out, or failed in a way that skipped its clean-up).
    bool clean = true;

   private:
    CacheKeeper& keeper_;
  };

  BuildPipelineRunner::CacheStats stats() const;
  void settle() const;

 private:
  void enter();
  void leave(const std::vector<std::string>& used, bool clean);
  // Removes the build containers in the store, which only a killed build
  // leaves (mounted, with overlay); only when no build runs.
  void remove_containers();
  void loop(std::stop_token stop);
  // Whether the store is over its budget; measures it.
  bool over_budget();
  void prune();
  void event(std::string_view what) const;

  const BuildPipelineConfig& config_;
  const Builder::Store store_;
  mutable std::mutex mutex_;
  mutable std::condition_variable_any changed_;
  int running_ = 0;
  bool check_due_ = true;   // a job ended since the last measurement (or none was made yet)
  bool prune_due_ = false;  // over budget: no job starts until the prune ran
  bool pruning_ = false;
  bool busy_ = false;       // the thread is measuring or pruning
  bool dirty_ = true;       // containers may be left: by a killed build, or a killed worker before we started
  std::map<std::string, std::int64_t> last_used_;  // image id or base name -> unix milliseconds
  BuildPipelineRunner::CacheStats stats_;
  std::jthread thread_;  // last: started once the rest exists
};

}  // namespace blacktree::worker::detail
