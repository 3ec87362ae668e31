// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "image_cache.hpp"

#include <blacktree/worker/process.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/statvfs.h>
#include <unistd.h>

namespace blacktree::worker::detail {

namespace {

constexpr std::size_t prune_batch = 8;  // images removed between two measurements, at most

// Uses and creation times in milliseconds: whole seconds would rank an image
// a build used in the second another was made as old as that one.
std::int64_t unix_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// An RFC 3339 time as buildah writes it ("2026-12-06T20:50:04.755897748Z",
// or with an offset such as "+01:00" instead of the Z) in unix milliseconds;
// nullopt for anything else.
std::optional<std::int64_t> rfc3339_ms(const std::string& text) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, used = 0;
  double second = 0;
  const int fields =
      std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%lf%n", &year, &month, &day, &hour, &minute, &second, &used);
  if (fields != 6) return std::nullopt;
  int offset_minutes = 0;
  const std::string zone = text.substr(static_cast<std::size_t>(used));
  if (int oh = 0, om = 0; zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') &&
                          std::sscanf(zone.c_str() + 1, "%2d:%2d", &oh, &om) == 2) {
    offset_minutes = (zone[0] == '+' ? 1 : -1) * (oh * 60 + om);
  } else if (zone != "Z") {
    return std::nullopt;
  }
  const std::chrono::year_month_day date{std::chrono::year(year), std::chrono::month(static_cast<unsigned>(month)),
                                         std::chrono::day(static_cast<unsigned>(day))};
  if (!date.ok()) return std::nullopt;
  const auto midnight = std::chrono::sys_days(date).time_since_epoch();
  return std::chrono::duration_cast<std::chrono::milliseconds>(midnight).count() +
         ((hour * 60 + minute - offset_minutes) * std::int64_t{60} * 1000) + static_cast<std::int64_t>(second * 1000);
}

// Runs argv to completion; its output when it exited 0.
std::optional<std::string> output_of(std::vector<std::string> argv) {
  ProcessSpec spec;
  spec.argv = std::move(argv);
  spec.env = minimal_environment();
  spec.timeout = std::chrono::minutes(5);
  std::string out;
  const auto outcome = run_process(spec, [&](std::string_view line) { out.append(line).append("\n"); });
  if (!outcome.ok()) return std::nullopt;
  return out;
}

struct Image {
  std::string id;
  std::vector<std::string> names;
  std::int64_t created_ms = 0;
};

std::vector<Image> parse_images(const std::string& json) {
  std::vector<Image> images;
  const auto list = nlohmann::json::parse(json, nullptr, false);
  if (!list.is_array()) return images;
  for (const auto& item : list) {
    if (!item.is_object() || !item.contains("id") || !item["id"].is_string()) continue;
    Image image;
    image.id = item["id"].get<std::string>();
    // "sha256:<hex>" here, the bare hex in a build's "--> Using cache <id>":
    // the id a use was recorded under.
    if (image.id.rfind("sha256:", 0) == 0) image.id.erase(0, 7);
    if (item.contains("createdatraw") && item["createdatraw"].is_string()) {
      image.created_ms = rfc3339_ms(item["createdatraw"].get<std::string>()).value_or(0);
    }
    if (image.created_ms == 0 && item.contains("created") && item["created"].is_number_integer()) {
      image.created_ms = item["created"].get<std::int64_t>() * 1000;
    }
    if (item.contains("names") && item["names"].is_array()) {
      for (const auto& n : item["names"])
        if (n.is_string()) image.names.push_back(n.get<std::string>());
    }
    images.push_back(std::move(image));
  }
  return images;
}

}  // namespace

CacheKeeper::CacheKeeper(const BuildPipelineConfig& config, Builder::Store store)
    : config_(config), store_(std::move(store)), thread_([this](std::stop_token stop) { loop(std::move(stop)); }) {}

CacheKeeper::~CacheKeeper() = default;  // thread_ (declared last) stops and joins first

CacheKeeper::Use::Use(CacheKeeper& keeper) : keeper_(keeper) { keeper_.enter(); }
CacheKeeper::Use::~Use() { keeper_.leave(used, clean); }

void CacheKeeper::enter() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !prune_due_ && !pruning_; });
  ++running_;
}

void CacheKeeper::leave(const std::vector<std::string>& used, bool clean) {
  std::lock_guard lock(mutex_);
  if (!clean) dirty_ = true;
  const auto now = unix_now_ms();
  for (const auto& id : used) last_used_[id] = now;
  --running_;
  check_due_ = true;
  changed_.notify_all();
}

BuildPipelineRunner::CacheStats CacheKeeper::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CacheKeeper::settle() const {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !check_due_ && !busy_; });
}

void CacheKeeper::loop(std::stop_token stop) {
  std::unique_lock lock(mutex_);
  while (changed_.wait(lock, stop, [&] { return check_due_; })) {
    check_due_ = false;
    busy_ = true;
    lock.unlock();
    const bool over = over_budget();
    lock.lock();
    // Works on the store while no build runs and none may start.
    const auto alone = [&](auto work) {
      pruning_ = true;
      dirty_ = false;
      lock.unlock();
      work();
      lock.lock();
      pruning_ = false;
    };
    if (over) {
      // No new job starts from here on; the running ones finish undisturbed.
      prune_due_ = true;
      const bool idle = changed_.wait(lock, stop, [&] { return running_ == 0; });
      prune_due_ = false;
      if (idle) alone([this] { prune(); });
    } else if (dirty_ && running_ == 0) {
      // Left containers go at the next moment no build runs; none is waited for.
      alone([this] { remove_containers(); });
    }
    busy_ = false;
    changed_.notify_all();
  }
}

bool CacheKeeper::over_budget() {
  std::error_code ec;
  if (!std::filesystem::exists(store_.dir, ec)) return false;  // no build made it yet
  // du as the store's owner sees it: rootless, the store's files belong to
  // subordinate ids, readable in the user namespace the builds run in.
  std::vector<std::string> du{"du", "-s", "-x", "-B1", store_.dir.string()};
  if (::geteuid() != 0) du.insert(du.begin(), {"unshare", "--map-root-user", "--map-auto", "--"});
  const auto out = output_of(du);
  if (!out) {
    event(fmt::format("cannot measure the image cache {} (du failed); not pruning it", store_.dir.string()));
    return false;
  }
  const std::uint64_t size = std::strtoull(out->c_str(), nullptr, 10);
  std::uint64_t free_bytes = UINT64_MAX;
  if (struct statvfs fs {}; ::statvfs(store_.dir.c_str(), &fs) == 0) {
    free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  }
  {
    std::lock_guard lock(mutex_);
    stats_.size_bytes = size;
  }
  const bool too_big = config_.cache_max_bytes > 0 && size > config_.cache_max_bytes;
  const bool too_full = config_.cache_min_free_bytes > 0 && free_bytes < config_.cache_min_free_bytes;
  return too_big || too_full;
}

void CacheKeeper::prune() {
  const auto store_argv = [&](std::initializer_list<std::string> args) {
    auto argv = store_.argv;
    argv.insert(argv.end(), args);
    return argv;
  };
  remove_containers();
  const auto listed = output_of(store_argv({"images", "--all", "--json", "--no-trunc"}));
  if (!listed) {
    event(fmt::format("cannot list the images of the image cache {}; not pruning it", store_.dir.string()));
    return;
  }
  auto images = parse_images(*listed);
  // Least recently used first: the last build that took it from the cache,
  // else when it was made (or pulled).
  const auto last_use = [&](const Image& image) {
    std::lock_guard lock(mutex_);
    std::int64_t t = image.created_ms;
    if (auto it = last_used_.find(image.id); it != last_used_.end()) t = std::max(t, it->second);
    for (const auto& name : image.names)
      if (auto it = last_used_.find(name); it != last_used_.end()) t = std::max(t, it->second);
    return t;
  };
  std::stable_sort(images.begin(), images.end(),
                   [&](const Image& a, const Image& b) { return last_use(a) < last_use(b); });
  std::uint64_t before = 0;
  {
    std::lock_guard lock(mutex_);
    before = stats_.size_bytes;
  }
  const std::uint64_t target = config_.cache_max_bytes / 10 * 8;
  // In batches that grow (1, 2, 4, then 8 images between measurements): a
  // store a few images over its budget loses only its least recently used
  // ones, and a large store is not measured after every image.
  std::size_t batch = 1;
  for (std::size_t i = 0; i < images.size(); batch = std::min(batch * 2, prune_batch)) {
    auto argv = store_argv({"rmi"});
    for (const auto end = std::min(images.size(), i + batch); i < end; ++i) argv.push_back(images[i].id);
    // Without --force: an image some container still uses stays.
    (void)output_of(argv);
    if (!over_budget()) {
      std::lock_guard lock(mutex_);
      if (config_.cache_max_bytes == 0 || stats_.size_bytes <= target) break;
    }
  }
  const auto left = output_of(store_argv({"images", "--all", "--json", "--no-trunc"}));
  const std::size_t removed = left ? images.size() - std::min(images.size(), parse_images(*left).size()) : 0;
  std::uint64_t after = 0;
  {
    std::lock_guard lock(mutex_);
    ++stats_.prunes;
    stats_.pruned_images += removed;
    after = stats_.size_bytes;
  }
  event(fmt::format("pruned the image cache {}: {} of {} images removed, {} bytes -> {} bytes (budget {} bytes, at "
                    "least {} bytes free)",
                    store_.dir.string(), removed, images.size(), before, after, config_.cache_max_bytes,
                    config_.cache_min_free_bytes));
}

void CacheKeeper::remove_containers() {
  // No build runs now: a container in the store is one a killed build left.
  auto argv = store_.argv;
  argv.insert(argv.end(), {"rm", "--all"});
  if (!output_of(argv)) event(fmt::format("cannot remove the build containers left in {}", store_.dir.string()));
}

void CacheKeeper::event(std::string_view what) const {
  if (config_.on_event) config_.on_event(what);
}

}  // namespace blacktree::worker::detail
