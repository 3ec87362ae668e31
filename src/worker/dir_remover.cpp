// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "dir_remover.hpp"

#include <fmt/format.h>

#include <sys/statvfs.h>

#include <system_error>
#include <utility>

namespace blacktree::worker::detail {
namespace fs = std::filesystem;

namespace {

std::uint64_t free_bytes(const fs::path& where) {
  struct statvfs info {};
  if (::statvfs(where.c_str(), &info) != 0) return UINT64_MAX;  // unknown: do not hold jobs back
  return static_cast<std::uint64_t>(info.f_bavail) * info.f_frsize;
}

}  // namespace

DirRemover::DirRemover(std::function<void(std::string_view)> on_event)
    : on_event_(std::move(on_event)), thread_([this](std::stop_token stop) { loop(std::move(stop)); }) {}

DirRemover::~DirRemover() {
  settle();
  // thread_ (declared last) stops and joins first.
}

void DirRemover::remove(fs::path dir) {
  std::lock_guard lock(mutex_);
  queue_.push_back(std::move(dir));
  changed_.notify_all();
}

void DirRemover::wait_for_space(const fs::path& where, std::uint64_t floor) {
  if (floor == 0) return;
  std::unique_lock lock(mutex_);
  // Each finished removal wakes the waiters to measure again.
  changed_.wait(lock, [&] { return (queue_.empty() && !busy_) || free_bytes(where) >= floor; });
}

void DirRemover::settle() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return queue_.empty() && !busy_; });
}

void DirRemover::loop(std::stop_token stop) {
  std::unique_lock lock(mutex_);
  while (changed_.wait(lock, stop, [&] { return !queue_.empty(); })) {
    fs::path dir = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lock.unlock();
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec && on_event_) on_event_(fmt::format("could not remove the job directory {}: {}", dir.string(), ec.message()));
    lock.lock();
    busy_ = false;
    changed_.notify_all();
  }
}

}  // namespace blacktree::worker::detail
