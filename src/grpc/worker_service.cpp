// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/grpc/worker_service.hpp>

#include <blacktree/core/detail/recent_ids.hpp>
#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>
#include <pthread.h>

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <exception>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string_view>
#include <thread>

namespace blacktree::grpc {
// Named, not anonymous: WorkerService::State holds these types, and a type
// with internal linkage inside a class with external linkage is an ODR hazard
// (GCC's -Wsubobject-linkage, which a unity build turns on).
namespace worker_service_detail {

namespace v1 = ::blacktree::v1;

// A RunJob the worker will not take: finished at once with the reason.
class Refusal final : public ::grpc::ServerWriteReactor<v1::RunJobReply> {
 public:
  explicit Refusal(const ::grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

// The outbox of one accepted RunJob. gRPC holds it until OnDone; the job's
// thread holds it until the job ends, and pushes to it from there.
//
// StartWrite and Finish are never called with mutex_ held: gRPC may run the
// resulting OnWriteDone inline on the calling thread.
class RunStream final : public ::grpc::ServerWriteReactor<v1::RunJobReply> {
 public:
  RunStream(std::string offer_id, std::size_t max_lines, std::function<void(const RunStream*)> on_cancel,
            std::function<void()> on_done)
      : offer_id_(std::move(offer_id)),
        max_lines_(max_lines),
        on_cancel_(std::move(on_cancel)),
        on_done_(std::move(on_done)) {}

  /// The offer this stream answers (RunJobRequest.offer_id; empty: none given).
  const std::string& offer_id() const noexcept { return offer_id_; }

  void hold(std::shared_ptr<RunStream> self) { self_ = std::move(self); }

  // The stream's first message. `written`, for a new run, is told once
  // whether it was written to the caller (false: the stream broke first).
  void push_accepted(const std::string& worker_id, std::chrono::milliseconds heartbeat_interval, bool attached,
                     std::function<void(bool written)> written = {}) {
    {
      std::lock_guard lock(mutex_);
      accepted_written_ = std::move(written);
    }
    v1::RunJobReply reply;
    auto& accepted = *reply.mutable_accepted();
    accepted.set_worker_id(worker_id);
    accepted.set_heartbeat_interval_ms(static_cast<std::uint32_t>(heartbeat_interval.count()));
    accepted.set_attached(attached);
    push(std::move(reply), false, false);
  }

  // `event` and `result` have valid UTF-8 in their text fields (see wire::repair_utf8).
  void push_event(const core::ProgressEvent& event) {
    v1::RunJobReply reply;
    *reply.mutable_event() = wire::to_proto(event);
    push(std::move(reply), !event.line.empty(), false);
  }

  // False when the stream is broken or done: the result did not go out here.
  bool push_result(const core::JobResult& result) {
    v1::RunJobReply reply;
    *reply.mutable_result() = wire::to_proto(result);
    return push(std::move(reply), false, true);
  }

  // Only onto an idle stream: anything else in flight says as much.
  void push_heartbeat() {
    Action action;
    {
      std::lock_guard lock(mutex_);
      if (done_ || broken_ || writing_ || !outbox_.empty() || result_queued_) return;
      v1::RunJobReply reply;
      reply.mutable_heartbeat();
      outbox_.emplace_back(std::move(reply), false);
      action = next_locked();
    }
    perform(action);
  }

  std::size_t dropped_lines() const {
    std::lock_guard lock(mutex_);
    return dropped_;
  }

  void OnWriteDone(bool ok) override {
    Action action;
    std::function<void(bool)> accepted_written;
    {
      std::lock_guard lock(mutex_);
      writing_ = false;
      if (!ok) broken_ = true;  // the caller is gone; OnCancel stops the job
      accepted_written = std::exchange(accepted_written_, {});  // the first write is the accepted message
      action = next_locked();
    }
    if (accepted_written) accepted_written(ok);
    perform(action);
  }

  void OnCancel() override {
    if (on_cancel_) on_cancel_(this);
    Action action;
    {
      std::lock_guard lock(mutex_);
      broken_ = true;
      action = next_locked();
    }
    perform(action);
  }

  void OnDone() override {
    std::shared_ptr<RunStream> self;
    std::function<void(bool)> accepted_written;
    {
      std::lock_guard lock(mutex_);
      done_ = true;
      self = std::move(self_);
      accepted_written = std::exchange(accepted_written_, {});  // broken before it was written
    }
    if (accepted_written) accepted_written(false);
    if (on_done_) on_done_();
    // `self` may be the last reference: *this ends with this scope.
  }

 private:
  enum class Action { none, write, write_last, finish_ok, finish_cancelled };

  bool push(v1::RunJobReply reply, bool is_line, bool last) {
    Action action;
    {
      std::lock_guard lock(mutex_);
      if (done_ || broken_) return false;
      if (is_line) {
        if (buffered_lines_ >= max_lines_) {
          ++dropped_;
          return true;
        }
        ++buffered_lines_;
      }
      outbox_.emplace_back(std::move(reply), is_line);
      if (last) result_queued_ = true;
      action = next_locked();
    }
    perform(action);
    return true;
  }

  // Decides what to start next; the caller performs it after unlocking.
  Action next_locked() {
    if (writing_ || finish_called_) return Action::none;
    if (broken_) {
      finish_called_ = true;
      return Action::finish_cancelled;
    }
    if (outbox_.empty()) {
      if (!result_queued_) return Action::none;
      finish_called_ = true;
      return Action::finish_ok;
    }
    auto [reply, is_line] = std::move(outbox_.front());
    outbox_.pop_front();
    if (is_line) --buffered_lines_;
    current_ = std::move(reply);
    writing_ = true;
    if (outbox_.empty() && result_queued_) {  // the result: it goes out with the call's end, in one batch
      finish_called_ = true;
      return Action::write_last;
    }
    return Action::write;
  }

  void perform(Action action) {
    switch (action) {
      case Action::none: break;
      case Action::write: StartWrite(&current_); break;
      case Action::write_last: StartWriteAndFinish(&current_, ::grpc::WriteOptions(), ::grpc::Status::OK); break;
      case Action::finish_ok: Finish(::grpc::Status::OK); break;
      case Action::finish_cancelled:
        Finish(::grpc::Status(::grpc::StatusCode::CANCELLED, "the caller went away"));
        break;
    }
  }

  const std::string offer_id_;
  const std::size_t max_lines_;
  std::function<void(const RunStream*)> on_cancel_;
  std::function<void()> on_done_;

  mutable std::mutex mutex_;
  std::deque<std::pair<v1::RunJobReply, bool>> outbox_;
  v1::RunJobReply current_;  // the write in progress; touched only by whoever set writing_
  std::size_t buffered_lines_ = 0;
  std::size_t dropped_ = 0;
  std::function<void(bool)> accepted_written_;
  bool writing_ = false;
  bool result_queued_ = false;
  bool finish_called_ = false;
  bool broken_ = false;
  bool done_ = false;
  std::shared_ptr<RunStream> self_;
};

// The runner's result; a runner that throws (against its contract) fails its
// job instead of ending the process: an exception must not leave this thread.
core::JobResult run_guarded(worker::JobRunner& runner, const core::Job& job, const worker::EmitFn& emit,
                            std::stop_token stop) {
  core::JobResult failed;
  failed.success = false;
  try {
    return runner.run(job, emit, std::move(stop));
  } catch (const std::exception& e) {
    failed.error = fmt::format("the job runner failed: {}", e.what());
  } catch (...) {
    failed.error = "the job runner failed with an exception that is not a std::exception";
  }
  return failed;
}

// One run of a job, and every stream that waits for its outcome: the one that
// started it and any attached later (the same job id offered again).
struct RunningJob {
  using Clock = std::chrono::steady_clock;

  std::string id;
  std::stop_source stop;

  std::mutex mutex;  // taken after State::mutex when both are
  std::vector<std::shared_ptr<RunStream>> callers;
  std::string last_offer;  // the offer id of the caller that came last
  // Set once its first caller was written that it was accepted: before that
  // the job does not run (a caller that never read it offers it elsewhere).
  bool started = false;
  bool finished = false;       // the result is out to `callers`; no more attach
  Clock::time_point orphaned;  // since when no caller waits for it (epoch: one does)
  // False once the job is being dropped (taken back by its orchestrator, or
  // nobody came for it): its result is not kept, and no caller attaches.
  bool keep = true;

  std::vector<std::shared_ptr<RunStream>> streams() {
    std::lock_guard lock(mutex);
    return callers;
  }

  // A caller went away. With no caller left, the job runs on for `grace`
  // (true: it just became an orphan), or stops at once when there is none.
  bool drop(const RunStream* stream, std::chrono::milliseconds grace) {
    std::lock_guard lock(mutex);
    std::erase_if(callers, [stream](const auto& s) { return s.get() == stream; });
    if (!callers.empty() || finished || !started) return false;  // not started: start() decides
    if (grace.count() <= 0) {
      stop.request_stop();
      return false;
    }
    if (orphaned != Clock::time_point{}) return false;
    orphaned = Clock::now();
    return true;
  }

  enum class Start { run, run_orphaned, never };
  // Its first caller's accepted message was written, or that stream broke
  // first (`written` false: that caller never learnt it was taken, and offers
  // it elsewhere). Runs for any caller still there; with none, it never runs
  // unless the accepted message went out, when it runs on as an orphan.
  Start start(const RunStream* first, bool written, std::chrono::milliseconds grace) {
    std::lock_guard lock(mutex);
    if (!written) std::erase_if(callers, [first](const auto& s) { return s.get() == first; });
    if (callers.empty() && (!written || grace.count() <= 0)) {
      finished = true;  // nothing attaches to it any more
      keep = false;
      return Start::never;
    }
    started = true;
    if (!callers.empty()) return Start::run;
    orphaned = Clock::now();
    return Start::run_orphaned;
  }
};

// A finished job's result, for a caller that comes for it later.
struct KeptResult {
  core::JobResult result;
  std::string offer;  // the offer that came last for it (its run's, or one that collected it)
  std::chrono::steady_clock::time_point expires;
  bool collected = false;  // handed to a caller at least once
};

}  // namespace worker_service_detail
using namespace worker_service_detail;

struct WorkerService::State {
  State(worker::JobRunner& r, WorkerServiceOptions o) : runner(r), options(std::move(o)) {}

  worker::JobRunner& runner;
  WorkerServiceOptions options;

  mutable std::mutex mutex;
  std::condition_variable idle;
  bool draining = false;
  std::map<std::string, std::shared_ptr<RunningJob>, std::less<>> jobs;
  // Accepted RunJob streams gRPC has not finished with: a job's slot is freed
  // before its result is sent, and a drain must not end (and deregister,
  // which makes the orchestrator call the job lost) before the result is out.
  std::size_t open_streams = 0;
  std::string orchestrator_id;
  PingListener ping_listener;
  CallerPolicy caller;
  std::string orchestrator_secret;
  std::map<std::string, KeptResult, std::less<>> kept;
  // What `kept` holds, oldest first: one grace for all, so the order they
  // were kept in is the order they expire in. An entry whose result was
  // taken back or kept again since no longer matches `kept` (its expiry
  // differs or its id is gone) and is skipped when it comes first.
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> kept_order;
  // Offers a Cancel took back before their RunJob arrived (the calls crossed).
  core::detail::RecentIds<bool> taken_back{1024, std::chrono::seconds(60)};

  void log(WorkerServiceEvent event, std::string_view job_id, std::string_view line) const {
    if (options.log) options.log(event, job_id, line);
  }

  std::string grace_text() const { return fmt::format("{} s", options.orphan_grace.count() / 1000.0); }

  void log_orphaned(const std::string& id) const {
    log(WorkerServiceEvent::job_orphaned, id,
        fmt::format("job {}: its caller went away (orchestrator gone?); it runs on for up to {} for an "
                    "orchestrator to come back for it",
                    id, grace_text()));
  }

  // Whether a new run may start now (RunningJob::start); one that may not
  // leaves at once, its slot free.
  bool begin_run(RunningJob& running, const RunStream* first, bool written) {
    RunningJob::Start start;
    {
      std::lock_guard lock(mutex);
      start = running.start(first, written, options.orphan_grace);
      if (start == RunningJob::Start::never) {
        if (auto it = jobs.find(running.id); it != jobs.end() && it->second.get() == &running) jobs.erase(it);
        idle.notify_all();
      }
    }
    if (start == RunningJob::Start::run_orphaned) log_orphaned(running.id);
    return start != RunningJob::Start::never;
  }

  // With `mutex` held. Keeps `result` for the grace, making room (the
  // soonest to expire goes); returns lines to log once the lock is released.
  std::vector<std::pair<std::string, std::string>> keep_result(const std::string& id, core::JobResult result,
                                                               std::string offer, bool collected) {
    std::vector<std::pair<std::string, std::string>> dropped;
    while (kept.size() >= std::max<std::size_t>(options.max_kept_results, 1)) {
      const auto oldest = oldest_kept();
      if (!oldest->second.collected)
        dropped.emplace_back(oldest->first, fmt::format("job {}: its result was dropped uncollected to make room "
                                                        "({} results kept at most)",
                                                        oldest->first, options.max_kept_results));
      drop_oldest_kept(oldest);
    }
    const auto expires = std::chrono::steady_clock::now() + options.orphan_grace;
    kept.insert_or_assign(id, KeptResult{std::move(result), std::move(offer), expires, collected});
    kept_order.emplace_back(expires, id);
    return dropped;
  }

  // The oldest kept result (kept.end(): none), its entry now first in
  // kept_order: the stale entries before it are dropped.
  std::map<std::string, KeptResult, std::less<>>::iterator oldest_kept() {
    for (; !kept_order.empty(); kept_order.pop_front()) {
      const auto& [expires, id] = kept_order.front();
      if (auto it = kept.find(id); it != kept.end() && it->second.expires == expires) return it;
    }
    return kept.end();
  }
  void drop_oldest_kept(std::map<std::string, KeptResult, std::less<>>::iterator oldest) {
    kept_order.pop_front();
    kept.erase(oldest);
  }

  std::size_t uncollected() const {  // with `mutex` held
    return static_cast<std::size_t>(
        std::count_if(kept.begin(), kept.end(), [](const auto& k) { return !k.second.collected; }));
  }

  ::grpc::Status authorize(const ::grpc::ServerContextBase& context) const {
    CallerPolicy policy;
    std::string secret;
    {
      std::lock_guard lock(mutex);
      policy = caller;
      secret = orchestrator_secret;
    }
    return authorize_orchestrator(policy, secret, context);
  }
};

// The threads jobs run on: as many as the worker has slots (and one for a
// job whose slot is free again while its thread still tidies up after it:
// after_result), started with the first job that needs them. Tasks run in
// the order posted; the destructor runs what is queued, then joins.
class WorkerService::JobThreads {
 public:
  explicit JobThreads(std::size_t count) {
    threads_.reserve(count);
    for (std::size_t i = 0; i < count; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~JobThreads() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  JobThreads(const JobThreads&) = delete;
  JobThreads& operator=(const JobThreads&) = delete;

  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    wake_.notify_one();
  }

 private:
  void loop() {
    ::pthread_setname_np(::pthread_self(), "blacktree-job");  // what top -H and a test see
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;  // stopping, and nothing left to run
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

namespace {

// Offer ids are "<orchestrator id>-<n>", n growing with each offer that
// orchestrator process makes (blacktree.proto): true when `later` is a later
// offer than `earlier` of the same orchestrator. Ids of another form, or
// without an orchestrator id (nothing says two of them are one process's): false.
bool later_offer(std::string_view earlier, std::string_view later) {
  struct Name {
    std::string_view orchestrator;
    std::uint64_t n = 0;
  };
  auto parse = [](std::string_view id) -> std::optional<Name> {
    const auto dash = id.rfind('-');
    if (dash == std::string_view::npos || dash == 0) return std::nullopt;
    Name name{id.substr(0, dash)};
    const auto digits = id.substr(dash + 1);
    const auto* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, name.n);
    if (ec != std::errc{} || ptr != end) return std::nullopt;
    return name;
  };
  const auto a = parse(earlier), b = parse(later);
  return a && b && a->orchestrator == b->orchestrator && b->n > a->n;
}

// A stream for `running` (null: for a kept result), counted open until gRPC
// is done with it (a drain waits for that). Called with State::mutex held.
std::shared_ptr<RunStream> make_stream(const std::shared_ptr<WorkerService::State>& state,
                                       const std::shared_ptr<RunningJob>& running, const std::string& offer_id) {
  auto stream = std::make_shared<RunStream>(
      offer_id, state->options.max_buffered_lines,
      [weak = std::weak_ptr<RunningJob>(running), state](const RunStream* gone) {
        auto r = weak.lock();
        if (r && r->drop(gone, state->options.orphan_grace)) state->log_orphaned(r->id);
      },
      [state] {
        std::lock_guard done_lock(state->mutex);
        --state->open_streams;
        state->idle.notify_all();
      });
  ++state->open_streams;
  stream->hold(stream);
  return stream;
}

}  // namespace

std::string_view to_string(WorkerServiceEvent event) noexcept {
  switch (event) {
    case WorkerServiceEvent::job_orphaned: return "job.orphaned";
    case WorkerServiceEvent::job_attached: return "job.attached";
    case WorkerServiceEvent::orphan_stopped: return "job.orphan_stopped";
    case WorkerServiceEvent::result_dropped: return "job.result_dropped";
  }
  return "job.unknown";
}

WorkerService::WorkerService(worker::JobRunner& runner, WorkerServiceOptions options)
    : state_(std::make_shared<State>(runner, std::move(options))) {
  if (state_->options.capacity == 0) state_->options.capacity = 1;
  const auto heartbeat = state_->options.heartbeat_interval;
  const auto grace = state_->options.orphan_grace;
  if (heartbeat.count() <= 0 && grace.count() <= 0) return;
  // One thread for both clocks: heartbeats on idle streams, and the grace of
  // jobs without a caller and of kept results (checked a few times a grace).
  auto tick = heartbeat.count() > 0 ? heartbeat : std::chrono::milliseconds(1000);
  if (grace.count() > 0) tick = std::min(tick, std::max(grace / 4, std::chrono::milliseconds(50)));
  housekeeping_ = std::jthread([state = state_, heartbeat, tick](std::stop_token stop) {
    std::mutex mutex;
    std::condition_variable_any wake;
    auto next_heartbeat = std::chrono::steady_clock::now() + heartbeat;
    while (!stop.stop_requested()) {
      {
        std::unique_lock lock(mutex);
        wake.wait_for(lock, stop, tick, [] { return false; });
      }
      if (stop.stop_requested()) break;
      const auto now = std::chrono::steady_clock::now();
      if (heartbeat.count() > 0 && now >= next_heartbeat) {
        next_heartbeat = now + heartbeat;
        std::vector<std::shared_ptr<RunStream>> streams;
        {
          std::lock_guard lock(state->mutex);
          for (const auto& [id, job] : state->jobs) {
            auto callers = job->streams();
            streams.insert(streams.end(), callers.begin(), callers.end());
          }
        }
        for (const auto& stream : streams) stream->push_heartbeat();
      }
      if (state->options.orphan_grace.count() > 0) expire(*state, now);
    }
  });
}

// Stops the jobs nobody came back for within the grace, and drops the kept
// results nobody collected within it.
void WorkerService::expire(State& state, std::chrono::steady_clock::time_point now) {
  std::vector<std::pair<WorkerServiceEvent, std::pair<std::string, std::string>>> lines;
  {
    std::lock_guard lock(state.mutex);
    for (const auto& [id, job] : state.jobs) {
      std::lock_guard job_lock(job->mutex);
      if (job->orphaned == RunningJob::Clock::time_point{} || now - job->orphaned < state.options.orphan_grace ||
          !job->keep)
        continue;
      job->keep = false;
      job->stop.request_stop();
      lines.push_back({WorkerServiceEvent::orphan_stopped,
                       {id, fmt::format("job {}: no orchestrator came back for it within {}: stopped", id,
                                        state.grace_text())}});
    }
    for (auto it = state.oldest_kept(); it != state.kept.end() && it->second.expires <= now;
         it = state.oldest_kept()) {
      if (!it->second.collected)
        lines.push_back({WorkerServiceEvent::result_dropped,
                         {it->first, fmt::format("job {}: no orchestrator collected its result within {}: dropped "
                                                 "(it {})",
                                                 it->first, state.grace_text(),
                                                 it->second.result.success ? "succeeded" : "failed")}});
      state.drop_oldest_kept(it);
    }
    state.idle.notify_all();
  }
  for (const auto& [event, line] : lines) state.log(event, line.first, line.second);
}

WorkerService::~WorkerService() {
  drain();
  cancel_all("the worker is shutting down");
  {
    std::unique_lock lock(state_->mutex);
    state_->idle.wait(lock, [&] { return state_->jobs.empty(); });
  }
  threads_.reset();  // after_result of the last jobs, then the threads end
}

WorkerService::JobThreads& WorkerService::job_threads() {
  std::call_once(threads_started_,
                 [this] { threads_ = std::make_unique<JobThreads>(std::size_t{state_->options.capacity} + 1); });
  return *threads_;
}

void WorkerService::drain() {
  std::lock_guard lock(state_->mutex);
  state_->draining = true;
}

bool WorkerService::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mutex);
  return state_->idle.wait_for(lock, timeout, [&] { return state_->jobs.empty() && state_->open_streams == 0; });
}

void WorkerService::cancel_all(std::string_view /*reason*/) {
  std::lock_guard lock(state_->mutex);
  for (auto& [id, job] : state_->jobs) job->stop.request_stop();
}

core::Result<void> WorkerService::shutdown(Registrar* registrar, const ShutdownOptions& options) {
  drain();
  const auto deadline = std::chrono::steady_clock::now() + options.drain_timeout;
  core::Result<void> outcome;
  if (!wait_idle(options.drain_timeout)) {
    const auto cancelled = running();
    cancel_all(options.reason);
    if (wait_idle(options.cancel_grace)) {
      outcome = core::Error{errc::drain_deadline_exceeded,
                            fmt::format("drain deadline ({} ms) passed: cancelled {} job(s)",
                                        options.drain_timeout.count(), cancelled)};
    } else {
      outcome = core::Error{errc::jobs_still_running,
                            fmt::format("drain deadline ({} ms) passed: cancelled {} job(s), and {} still ran {} ms "
                                        "later (a runner that ignores its stop token?)",
                                        options.drain_timeout.count(), cancelled, running(),
                                        options.cancel_grace.count())};
    }
  }
  std::vector<std::string> dropped;
  {
    // Results of jobs whose orchestrator went away: one that comes back
    // (registered again, it is told of them) collects them.
    std::unique_lock lock(state_->mutex);
    state_->idle.wait_until(lock, deadline, [&] { return state_->uncollected() == 0; });
    for (const auto& [id, kept] : state_->kept)
      if (!kept.collected) dropped.push_back(id);
  }
  // Gone with this process: each said, since its job's redelivery runs it again.
  for (const auto& id : dropped)
    state_->log(WorkerServiceEvent::result_dropped, id,
                fmt::format("job {}: the worker stops before an orchestrator collected its result (drain deadline); "
                            "the job's next delivery runs it again",
                            id));
  // Deregistering only now: until the jobs end, their results still go out
  // through streams the orchestrator holds, and pings tell it we drain.
  if (registrar) (void)registrar->stop_and_deregister(options.reason);
  return outcome;
}

std::size_t WorkerService::running() const {
  std::lock_guard lock(state_->mutex);
  return state_->jobs.size();
}

std::vector<std::string> WorkerService::running_jobs() const {
  std::lock_guard lock(state_->mutex);
  std::vector<std::string> ids;
  for (const auto& [id, job] : state_->jobs) ids.push_back(id);
  return ids;
}

CarriedJobs WorkerService::carried_jobs() const {
  std::lock_guard lock(state_->mutex);
  CarriedJobs carried;
  for (const auto& [id, job] : state_->jobs) {
    std::lock_guard job_lock(job->mutex);
    if (job->keep) carried.running.push_back(id);
  }
  for (const auto& [id, kept] : state_->kept) carried.finished.push_back(id);
  return carried;
}

std::size_t WorkerService::callers(std::string_view job_id) const {
  std::lock_guard lock(state_->mutex);
  const auto it = state_->jobs.find(job_id);
  return it == state_->jobs.end() ? 0 : it->second->streams().size();
}

void WorkerService::set_orchestrator_id(std::string id) {
  std::lock_guard lock(state_->mutex);
  state_->orchestrator_id = std::move(id);
}

void WorkerService::set_ping_listener(PingListener listener) {
  std::lock_guard lock(state_->mutex);
  state_->ping_listener = std::move(listener);
}

void WorkerService::set_caller_policy(CallerPolicy policy) {
  std::lock_guard lock(state_->mutex);
  state_->caller = std::move(policy);
}

void WorkerService::set_orchestrator_secret(std::string secret) {
  std::lock_guard lock(state_->mutex);
  state_->orchestrator_secret = std::move(secret);
}

::grpc::ServerWriteReactor<v1::RunJobReply>* WorkerService::RunJob(::grpc::CallbackServerContext* context,
                                                                   const v1::RunJobRequest* request) {
  if (auto status = state_->authorize(*context); !status.ok()) return new Refusal(status);
  core::Job job = wire::from_proto(request->job());
  const auto& options = state_->options;

  std::unique_lock lock(state_->mutex);
  if (job.id.empty()) {
    return new Refusal(::grpc::Status(::grpc::StatusCode::INVALID_ARGUMENT, "the job has no jobId"));
  }
  // An offer its orchestrator took back before this call arrived (the calls
  // crossed) is never run or attached, whatever became of the job.
  if (!request->offer_id().empty() && state_->taken_back.find(request->offer_id())) {
    return new Refusal(::grpc::Status(
        ::grpc::StatusCode::FAILED_PRECONDITION,
        fmt::format("worker {} was told that this offer of job {} was taken back (the calls crossed)",
                    options.worker_id, job.id)));
  }
  // Before the draining and capacity checks: a job this worker runs already
  // takes no new slot, and a second run of it must never start anywhere.
  if (auto it = state_->jobs.find(job.id); it != state_->jobs.end()) {
    const auto running = it->second;
    std::unique_lock job_lock(running->mutex);
    if (!running->keep) {
      // Being dropped: whoever offers it runs it afresh once it ended.
      return new Refusal(::grpc::Status(
          ::grpc::StatusCode::FAILED_PRECONDITION,
          fmt::format("worker {} is stopping job {}; offer it again once it ended", options.worker_id, job.id)));
    }
    auto stream = make_stream(state_, running, request->offer_id());
    const bool was_orphan = running->orphaned != RunningJob::Clock::time_point{};
    running->orphaned = {};
    running->callers.push_back(stream);
    running->last_offer = request->offer_id();
    stream->push_accepted(options.worker_id, options.heartbeat_interval, true);
    job_lock.unlock();
    lock.unlock();
    if (was_orphan)
      state_->log(WorkerServiceEvent::job_attached, job.id,
                  fmt::format("job {}: an orchestrator came back for it; attached to its run", job.id));
    return stream.get();
  }
  // Finished, its result kept: the caller gets that result, not a second run.
  if (auto it = state_->kept.find(job.id); it != state_->kept.end()) {
    auto stream = make_stream(state_, nullptr, request->offer_id());
    it->second.collected = true;
    it->second.offer = request->offer_id();
    const core::JobResult result = it->second.result;
    state_->idle.notify_all();
    lock.unlock();
    stream->push_accepted(options.worker_id, options.heartbeat_interval, true);
    stream->push_result(result);
    state_->log(WorkerServiceEvent::job_attached, job.id,
                fmt::format("job {}: its kept result was handed to an orchestrator", job.id));
    return stream.get();
  }
  if (state_->draining) {
    return new Refusal(::grpc::Status(::grpc::StatusCode::FAILED_PRECONDITION,
                                      fmt::format("worker {} is draining and takes no new jobs", options.worker_id)));
  }
  if (state_->jobs.size() >= options.capacity) {
    return new Refusal(::grpc::Status(
        ::grpc::StatusCode::RESOURCE_EXHAUSTED,
        fmt::format("worker {} is full: {} of {} slots busy", options.worker_id, state_->jobs.size(), options.capacity)));
  }

  auto running = std::make_shared<RunningJob>();
  running->id = job.id;
  running->last_offer = request->offer_id();
  auto stream = make_stream(state_, running, request->offer_id());
  running->callers.push_back(stream);
  state_->jobs.emplace(job.id, running);

  auto run = [state = state_, running, job = std::move(job)]() mutable {
    const auto& worker_id = state->options.worker_id;
    const auto started = std::chrono::system_clock::now();
    worker::EmitFn emit = [&](std::string_view stage, std::string_view line) {
      core::ProgressEvent event{job.id, worker_id, core::Phase::running, std::string(stage), std::string(line)};
      wire::repair_utf8(event.stage);
      wire::repair_utf8(event.line);
      for (const auto& caller : running->streams()) caller->push_event(event);
    };
    core::JobResult result = run_guarded(state->runner, job, emit, running->stop.get_token());
    result.job_id = job.id;
    result.worker_id = worker_id;
    if (result.started_at == std::chrono::system_clock::time_point{}) result.started_at = started;
    result.finished_at = std::chrono::system_clock::now();
    for (auto* text : {&result.logs, &result.error, &result.image_url, &result.image_digest}) wire::repair_utf8(*text);
    // Free the slot before the result goes out: the orchestrator reuses it
    // as soon as it reads the result, and must not find this worker "full".
    // Kept (unless the job is being dropped) for a caller that comes for it
    // later: its orchestrator went away, or goes away before publishing it.
    std::vector<std::shared_ptr<RunStream>> callers;
    std::vector<std::pair<std::string, std::string>> dropped_results;
    bool kept = false;
    {
      std::lock_guard done_lock(state->mutex);
      state->jobs.erase(running->id);
      std::lock_guard job_lock(running->mutex);
      running->finished = true;
      callers = running->callers;
      kept = running->keep && state->options.orphan_grace.count() > 0;
      if (kept) dropped_results = state->keep_result(running->id, result, running->last_offer, false);
      state->idle.notify_all();
    }
    bool delivered = false;
    for (const auto& caller : callers) {
      core::JobResult mine = result;
      if (const auto dropped = caller->dropped_lines()) {
        mine.logs += fmt::format("\n[blacktree: {} output lines were not streamed: the caller read too slowly]",
                                 dropped);
      }
      delivered = caller->push_result(mine) || delivered;
    }
    if (kept && delivered) {
      std::lock_guard done_lock(state->mutex);
      if (auto it = state->kept.find(job.id); it != state->kept.end()) it->second.collected = true;
      state->idle.notify_all();
    }
    for (const auto& [id, line] : dropped_results) state->log(WorkerServiceEvent::result_dropped, id, line);
    // The result is on its way: now what need not delay it (the job's files).
    state->runner.after_result(job);
  };
  // Started only once the caller was written that it was taken: a worker
  // that dies before that leaves nothing running that its caller, never told,
  // offers elsewhere too. An immediate runner's job runs right there, on
  // gRPC's thread (OnWriteDone, never inside this call: the reactor is not
  // bound yet); any other on a job thread.
  JobThreads* threads = state_->runner.immediate() ? nullptr : &job_threads();
  stream->push_accepted(options.worker_id, options.heartbeat_interval, false,
                        [state = state_, threads, running, first = stream.get(),
                         run = std::move(run)](bool written) mutable {
                          auto start = [state, running, first, written, run = std::move(run)]() mutable {
                            if (state->begin_run(*running, first, written)) run();
                          };
                          if (threads)
                            threads->post(std::move(start));
                          else
                            start();
                        });
  return stream.get();
}

::grpc::ServerUnaryReactor* WorkerService::Ping(::grpc::CallbackServerContext* context, const v1::PingRequest* request,
                                                v1::PingReply* reply) {
  if (auto status = state_->authorize(*context); !status.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }
  PingListener listener;
  {
    std::lock_guard lock(state_->mutex);
    const auto& options = state_->options;
    reply->set_worker_id(options.worker_id);
    reply->set_incarnation(options.incarnation);
    reply->set_capacity(options.capacity);
    reply->set_state(state_->draining                            ? v1::WORKER_STATE_DRAINING
                     : state_->jobs.size() >= options.capacity ? v1::WORKER_STATE_BUSY
                                                                : v1::WORKER_STATE_FREE);
    for (const auto& [id, job] : state_->jobs) reply->add_running_jobs(id);
    reply->set_registered(!request->orchestrator_id().empty() &&
                          request->orchestrator_id() == state_->orchestrator_id);
    listener = state_->ping_listener;
  }
  if (listener) listener(request->orchestrator_id());
  auto* reactor = context->DefaultReactor();
  reactor->Finish(::grpc::Status::OK);
  return reactor;
}

::grpc::ServerUnaryReactor* WorkerService::Cancel(::grpc::CallbackServerContext* context,
                                                  const v1::CancelRequest* request, v1::CancelReply* reply) {
  if (auto status = state_->authorize(*context); !status.ok()) {
    auto* reactor = context->DefaultReactor();
    reactor->Finish(status);
    return reactor;
  }
  {
    std::lock_guard lock(state_->mutex);
    const std::string& id = request->job_id();
    auto it = state_->jobs.find(id);
    reply->set_found(it != state_->jobs.end());
    const std::string& offer = request->offer_id();
    // Its RunJob may still be on the way (the calls crossed): it is refused.
    if (request->taken_back() && !offer.empty()) state_->taken_back.put(offer, true);
    if (it != state_->jobs.end()) {
      bool stop = true;
      if (request->taken_back()) {
        std::lock_guard job_lock(it->second->mutex);
        // A later offer of the same orchestrator attached to the run (the
        // accepted of this one crossed its take-back, and the orchestrator
        // offered the job here again): the run is what it wants now. Any
        // other caller (another orchestrator's, an older offer's) does not
        // keep it: the orchestrator taking it back offers it elsewhere, and
        // the job must not run twice at once.
        stop = std::none_of(it->second->callers.begin(), it->second->callers.end(),
                            [&offer](const auto& caller) { return later_offer(offer, caller->offer_id()); });
        if (stop) it->second->keep = false;  // it runs elsewhere: nothing of this run is kept
      }
      if (stop) it->second->stop.request_stop();
    } else if (request->taken_back()) {
      // Finished already: nothing of it is kept, unless a later offer of the
      // same orchestrator came for it since (the result is that offer's, as
      // the run would be above). Or its RunJob is still on the way.
      if (auto kept = state_->kept.find(id); kept != state_->kept.end() && !later_offer(offer, kept->second.offer))
        state_->kept.erase(kept);
      state_->idle.notify_all();
    }
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(::grpc::Status::OK);
  return reactor;
}

}  // namespace blacktree::grpc
