// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#ifndef BLACKTREE_HEADER_ONLY
#include <blacktree/core/job_board.hpp>
#endif

#include <algorithm>
#include <tuple>

namespace blacktree::core {

BLACKTREE_INLINE std::string_view to_string(BoardState state) noexcept {
  switch (state) {
    case BoardState::waiting: return "waiting";
    case BoardState::running: return "running";
    case BoardState::publishing: return "publishing";
    case BoardState::finished: return "finished";
  }
  return "unknown";
}

BLACKTREE_INLINE bool JobBoard::received(const Job& job) {
  std::lock_guard lock(mutex_);
  if (held_.contains(job.id)) return false;
  Entry entry;
  entry.view.id = job.id;
  entry.view.labels = job.required_labels;
  entry.view.priority = job.priority;
  entry.view.received_at = std::chrono::system_clock::now();
  held_.emplace(job.id, std::move(entry));
  changed_.notify_all();
  return true;
}

BLACKTREE_INLINE JobBoard::Entry* JobBoard::find_locked(const std::string& id) {
  auto it = held_.find(id);
  return it == held_.end() ? nullptr : &it->second;
}

BLACKTREE_INLINE void JobBoard::assigned(const Job& job, const WorkerInfo& worker) {
  std::lock_guard lock(mutex_);
  if (Entry* entry = find_locked(job.id)) {
    entry->view.state = BoardState::running;
    entry->view.worker_id = worker.id;
    entry->view.started_at = std::chrono::system_clock::now();
    changed_.notify_all();
  }
}

BLACKTREE_INLINE void JobBoard::progress(const ProgressEvent& event) {
  std::lock_guard lock(mutex_);
  Entry* entry = find_locked(event.job_id);
  if (entry == nullptr) return;
  JobView& view = entry->view;
  view.phase = event.phase;
  if (!event.stage.empty()) view.stage = event.stage;
  if (!event.line.empty()) {
    entry->tail.push_back(BoardLine{view.lines, view.stage, event.line});
    ++view.lines;
    view.log_bytes += event.line.size();
    while (entry->tail.size() > options_.lines_per_job) entry->tail.pop_front();
  }
  changed_.notify_all();
}

BLACKTREE_INLINE void JobBoard::result(const Job& job, const JobResult& result) {
  std::lock_guard lock(mutex_);
  Entry* entry = find_locked(job.id);
  if (entry == nullptr) return;
  JobView& view = entry->view;
  view.state = BoardState::publishing;
  view.phase = Phase::finished;
  if (!result.worker_id.empty()) view.worker_id = result.worker_id;
  view.finished_at = std::chrono::system_clock::now();
  view.success = result.success;
  view.cancelled = result.cancelled;
  view.error = result.error;
  changed_.notify_all();
}

BLACKTREE_INLINE void JobBoard::finish_locked(std::unordered_map<std::string, Entry>::iterator it) {
  it->second.view.state = BoardState::finished;
  if (options_.finished > 0) {
    finished_.push_front(std::move(it->second));
    while (finished_.size() > options_.finished) finished_.pop_back();
  }
  held_.erase(it);
  changed_.notify_all();
}

BLACKTREE_INLINE void JobBoard::settled(const Job& job) {
  std::lock_guard lock(mutex_);
  if (auto it = held_.find(job.id); it != held_.end()) finish_locked(it);
}

BLACKTREE_INLINE void JobBoard::dropped(const Job& job, std::string_view why) {
  std::lock_guard lock(mutex_);
  auto it = held_.find(job.id);
  if (it == held_.end()) return;
  JobView& view = it->second.view;
  if (view.finished_at == JobView::Time{}) view.finished_at = std::chrono::system_clock::now();
  view.success = false;
  view.error = std::string(why);
  finish_locked(it);
}

BLACKTREE_INLINE std::vector<JobView> JobBoard::jobs(bool finished) const {
  std::lock_guard lock(mutex_);
  std::vector<JobView> out;
  out.reserve(held_.size() + (finished ? finished_.size() : 0));
  for (const auto& [id, entry] : held_) out.push_back(entry.view);
  std::sort(out.begin(), out.end(), [](const JobView& a, const JobView& b) {
    return std::tie(a.received_at, a.id) < std::tie(b.received_at, b.id);
  });
  if (finished) {
    for (const auto& entry : finished_) out.push_back(entry.view);
  }
  return out;
}

BLACKTREE_INLINE std::optional<JobView> JobBoard::job(const std::string& id) const {
  std::lock_guard lock(mutex_);
  if (auto it = held_.find(id); it != held_.end()) return it->second.view;
  for (const auto& entry : finished_) {
    if (entry.view.id == id) return entry.view;
  }
  return std::nullopt;
}

BLACKTREE_INLINE std::vector<Backlog> JobBoard::backlog() const {
  std::lock_guard lock(mutex_);
  std::map<Labels, Backlog> by_labels;
  for (const auto& [id, entry] : held_) {
    if (entry.view.state != BoardState::waiting) continue;
    Backlog& b = by_labels[entry.view.labels];
    if (b.jobs == 0 || entry.view.received_at < b.oldest) b.oldest = entry.view.received_at;
    b.labels = entry.view.labels;
    ++b.jobs;
  }
  std::vector<Backlog> out;
  out.reserve(by_labels.size());
  for (auto& [labels, b] : by_labels) out.push_back(std::move(b));
  return out;
}

BLACKTREE_INLINE JobBoard::Tail JobBoard::lines(const std::string& id, std::uint64_t from,
                                                std::chrono::milliseconds wait) const {
  std::unique_lock lock(mutex_);
  const auto find = [&]() -> const Entry* {
    if (auto it = held_.find(id); it != held_.end()) return &it->second;
    for (const auto& entry : finished_) {
      if (entry.view.id == id) return &entry;
    }
    return nullptr;
  };
  const auto read = [&](const Entry* entry) {
    Tail tail;
    tail.closed = closed_;
    if (entry == nullptr) return tail;
    tail.known = true;
    tail.ended = entry->view.state == BoardState::publishing || entry->view.state == BoardState::finished;
    for (const auto& line : entry->tail) {
      if (line.seq >= from) tail.lines.push_back(line);
    }
    tail.next = std::max(from, entry->view.lines);
    return tail;
  };
  Tail tail = read(find());
  if (!tail.lines.empty() || tail.ended || !tail.known || tail.closed || wait.count() <= 0) return tail;
  changed_.wait_for(lock, wait, [&] {
    if (closed_) return true;
    const Entry* entry = find();
    return entry == nullptr || entry->view.lines > from || entry->view.state == BoardState::publishing ||
           entry->view.state == BoardState::finished;
  });
  return read(find());
}

BLACKTREE_INLINE void JobBoard::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
  changed_.notify_all();
}

}  // namespace blacktree::core
