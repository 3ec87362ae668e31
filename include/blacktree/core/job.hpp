// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Plain value types shared by the core and every adapter. Wire formats (the
// seed's JSON, protobuf) map onto these in the adapters; nothing here knows
// about them.

#include <blacktree/core/detail/config.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace blacktree::core {

/// Key/value labels a worker offers (region=eu-west-1, arch=arm64) and a job may require.
using Labels = std::map<std::string, std::string, std::less<>>;

/// True when `offered` has every key of `required` with the same value.
BLACKTREE_INLINE bool labels_match(const Labels& required, const Labels& offered) noexcept;

/// "{region=eu, arch=arm64}", for messages a person reads.
BLACKTREE_INLINE std::string to_string(const Labels& labels);

/// A value that must never be printed: streaming it writes "[redacted]".
/// Only `reveal()` gives the text, so every use of a secret is greppable.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}

  const std::string& reveal() const noexcept { return value_; }
  bool empty() const noexcept { return value_.empty(); }

  friend bool operator==(const Secret&, const Secret&) = default;
  friend std::ostream& operator<<(std::ostream& os, const Secret& s) {
    return os << (s.empty() ? "" : "[redacted]");
  }

 private:
  std::string value_;
};

/// What a job is about, for whoever runs it: an immutable value of any type,
/// shared (copying a Job copies a pointer) and never read by the core. The
/// runner asks for the type it expects and gets nullptr for any other, so a
/// job meant for another kind of worker is refused, not misread.
///   job.payload = core::Payload(worker::BuildSpec{...});
///   if (const auto* spec = job.payload.get<worker::BuildSpec>()) ...
class Payload {
 public:
  /// No payload: has_value() is false and get<T>() is nullptr for every T.
  Payload() = default;

  /// Holds a copy of `value`. Text (a literal, a string_view) is held as a
  /// std::string: a payload outlives the buffer it was made from.
  template <class T>
    requires(!std::is_same_v<std::remove_cvref_t<T>, Payload> && !std::is_array_v<std::remove_cvref_t<T>> &&
             !std::is_pointer_v<std::remove_cvref_t<T>> &&
             !std::is_same_v<std::remove_cvref_t<T>, std::string_view>)
  explicit Payload(T&& value) : Payload(make<std::remove_cvref_t<T>>(std::forward<T>(value))) {}
  explicit Payload(const char* text) : Payload(make<std::string>(text)) {}
  explicit Payload(std::string_view text) : Payload(make<std::string>(text)) {}

  /// A payload holding a T constructed from `args`.
  template <class T, class... Args>
  static Payload make(Args&&... args) {
    static_assert(std::is_same_v<T, std::remove_cvref_t<T>>, "a payload holds a plain value type");
    Payload out;
    out.value_ = std::make_shared<const T>(std::forward<Args>(args)...);
    out.type_ = &typeid(T);
    return out;
  }

  /// The value when it is a T, else nullptr (also when there is none).
  template <class T>
  const T* get() const noexcept {
    if (!value_ || *type_ != typeid(std::remove_cv_t<T>)) return nullptr;
    return static_cast<const T*>(value_.get());
  }

  bool has_value() const noexcept { return value_ != nullptr; }
  explicit operator bool() const noexcept { return has_value(); }

 private:
  // type_info, not the address of a per-type tag: the identity must hold
  // across shared libraries, where one tag can exist twice.
  std::shared_ptr<const void> value_;
  const std::type_info* type_ = nullptr;
};

/// One unit of work as the dispatcher sees it.
struct Job {
  std::string id;                       ///< required; statuses are matched on it
  Labels required_labels;               ///< only a worker offering all of them runs the job
  std::chrono::milliseconds timeout{0};  ///< 0: the worker's default
  /// 0-9: among jobs waiting for a worker, a higher one is placed first.
  std::uint8_t priority = 0;
  bool redelivered = false;             ///< the source delivered this job before
  Payload payload;                      ///< what the job is about; only its runner reads it
};

/// Where a job is, as far as the core can tell. What a running job is doing
/// (blacktree's build runner: "cloning", "building", "pushing") is its
/// ProgressEvent::stage, named by the runner.
enum class Phase : std::uint8_t { accepted, running, finished };

BLACKTREE_INLINE std::string_view to_string(Phase phase) noexcept;

/// A progress report from a worker: a phase or stage change, a log line, or both.
struct ProgressEvent {
  std::string job_id;
  std::string worker_id;
  Phase phase = Phase::accepted;
  // Braced defaults: {job, worker, Phase::finished} stays a complete initializer.
  std::string stage{};  ///< the runner's name for what a running job is doing; empty otherwise
  std::string line{};   ///< one line of output; empty for a bare phase or stage change
};

/// Called by a transport for each progress event, from any thread. May be empty.
using ProgressCallback = std::function<void(const ProgressEvent&)>;

/// The final status of a job (the seed's JobResponse plus extensions).
struct JobResult {
  std::string job_id;
  /// Stable per (job, run): the same on every retry of this status, so a consumer can drop
  /// exact duplicates. The dispatcher assigns it; the AMQP sink sends it as `message-id`.
  std::string status_id;
  bool success = false;
  std::string logs;       ///< a bounded tail of the job's output
  std::string image_url;
  std::string error;      ///< what went wrong, for a person to act on; empty on success
  std::string worker_id;
  std::string image_digest;
  bool redelivered = false;  ///< the job had been delivered before: maybe a duplicate
  bool cancelled = false;    ///< stopped (or never started) because a cancel asked for it
  std::uint32_t attempts = 0;  ///< workers it was offered to (never-accepted ones included)
  std::chrono::system_clock::time_point received_at{};
  std::chrono::system_clock::time_point started_at{};
  std::chrono::system_clock::time_point finished_at{};
  /// How long each stage of the run took ("cloning", "building", "pushing"
  /// for a build), as the runner measured it; empty when it does not say.
  std::map<std::string, std::chrono::milliseconds> stage_durations;
  /// Build steps taken from the image cache, and steps that ran.
  std::uint32_t cached_steps = 0;
  std::uint32_t built_steps = 0;
  /// Each build step after FROM, in the build's order (stages one after
  /// another): true when it was taken from the cache, false when it ran.
  std::vector<bool> cached_by_step;
};

/// A worker as it registers itself.
struct WorkerInfo {
  std::string id;
  std::string address;      ///< how the transport reaches it, e.g. "10.0.0.7:50051"
  Labels labels;            ///< region and whatever else jobs may require
  std::uint32_t capacity = 1;  ///< jobs it runs at once
  std::string version;
  std::string incarnation;  ///< changes whenever the worker process restarts
};

/// registering: known, not yet answering; free: alive with a free slot; busy:
/// alive with every slot taken; draining: alive, takes no new jobs; dead:
/// missed its pings, takes nothing until it answers again.
enum class WorkerState : std::uint8_t { registering, free, busy, draining, dead };

BLACKTREE_INLINE std::string_view to_string(WorkerState state) noexcept;

/// What a worker says about itself when pinged.
struct PingReply {
  std::string worker_id;
  std::string incarnation;
  WorkerState state = WorkerState::free;
  std::uint32_t capacity = 0;
  std::vector<std::string> running_jobs;
};

/// What to do with a delivery that will not be acked.
enum class Disposition : std::uint8_t {
  requeue,      ///< give it back to the source to deliver again (it has not run)
  dead_letter,  ///< it can never run (malformed, invalid): park it with the reason
};

}  // namespace blacktree::core

#ifdef BLACKTREE_HEADER_ONLY
#include <blacktree/core/job-inl.hpp>
#endif
