// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#ifndef BLACKTREE_HEADER_ONLY
#include <blacktree/core/in_memory.hpp>
#endif

#include <algorithm>

namespace blacktree::core {

// ---------------------------------------------------------------------------
// InMemoryQueue

BLACKTREE_INLINE InMemoryQueue::Delivery& InMemoryQueue::Delivery::operator=(Delivery&& other) noexcept {
  if (this != &other) {
    hand_back();
    state_ = std::move(other.state_);
    message_ = std::move(other.message_);
  }
  return *this;
}

BLACKTREE_INLINE InMemoryQueue::Delivery::~Delivery() { hand_back(); }

// Dropped unsettled: back to the queue, as a broker does for a closed channel.
BLACKTREE_INLINE void InMemoryQueue::Delivery::hand_back() noexcept {
  if (!state_) return;
  auto state = std::move(state_);
  {
    std::lock_guard lock(state->mutex);
    --state->unacked;
  }
  message_.job.redelivered = true;
  enqueue(state, std::move(message_));
}

BLACKTREE_INLINE InMemoryQueue::InMemoryQueue(asio::any_io_executor executor)
    : state_(std::make_shared<State>(std::move(executor))) {}

BLACKTREE_INLINE InMemoryQueue::~InMemoryQueue() { close(); }

BLACKTREE_INLINE void InMemoryQueue::publish(Job job) { enqueue(state_, Message{std::move(job), {}}); }

BLACKTREE_INLINE void InMemoryQueue::publish_invalid(Job job, std::string reason) {
  enqueue(state_, Message{std::move(job), std::move(reason)});
}

BLACKTREE_INLINE InMemoryQueue::Delivery InMemoryQueue::take_locked(const std::shared_ptr<State>& state) {
  Message message = std::move(state->ready.front());
  state->ready.pop_front();
  ++state->unacked;
  state->max_unacked = std::max(state->max_unacked, state->unacked);
  return Delivery(state, std::move(message));
}

BLACKTREE_INLINE void InMemoryQueue::enqueue(const std::shared_ptr<State>& state, Message message) {
  std::unique_lock lock(state->mutex);
  state->ready.push_back(std::move(message));
  if (state->closed || state->receivers.empty()) return;
  Receiver receiver = std::move(state->receivers.front());
  state->receivers.pop_front();
  deliver_locked(state, std::move(receiver), lock);
}

BLACKTREE_INLINE void InMemoryQueue::start_receive(Receiver receiver, asio::cancellation_slot slot) {
  std::unique_lock lock(state_->mutex);
  if (state_->closed) {
    lock.unlock();
    fail(receiver, errc::source_closed);
    return;
  }
  if (!state_->ready.empty()) {
    deliver_locked(state_, std::move(receiver), lock);
    return;
  }
  receiver.id = state_->next_receiver++;
  const auto id = receiver.id;
  state_->receivers.push_back(std::move(receiver));
  lock.unlock();
  if (slot.is_connected()) slot.template emplace<CancelReceive>(state_, id);
}

BLACKTREE_INLINE void InMemoryQueue::deliver_locked(const std::shared_ptr<State>& state, Receiver receiver,
                                                    std::unique_lock<std::mutex>& lock) {
  if (receiver.one) {
    Delivery delivery = take_locked(state);
    lock.unlock();
    receiver.one.complete(std::error_code{}, std::move(delivery));
    return;
  }
  std::vector<Delivery> batch = take_some_locked(state, receiver.max);
  lock.unlock();
  receiver.some.complete(std::error_code{}, std::move(batch));
}

BLACKTREE_INLINE std::vector<InMemoryQueue::Delivery> InMemoryQueue::take_some_locked(
    const std::shared_ptr<State>& state, std::size_t max) {
  std::vector<Delivery> batch;
  batch.reserve(std::min(max, state->ready.size()));
  while (batch.size() < max && !state->ready.empty()) batch.push_back(take_locked(state));
  return batch;
}

BLACKTREE_INLINE std::vector<InMemoryQueue::Delivery> InMemoryQueue::try_receive_some(std::size_t max) {
  std::lock_guard lock(state_->mutex);
  if (state_->closed || !state_->receivers.empty()) return {};
  return take_some_locked(state_, max);
}

BLACKTREE_INLINE void InMemoryQueue::fail(Receiver& receiver, std::error_code ec) {
  if (receiver.one)
    receiver.one.complete(ec, Delivery{});
  else
    receiver.some.complete(ec, {});
}

BLACKTREE_INLINE void InMemoryQueue::settle(Delivery& delivery) {
  auto state = std::exchange(delivery.state_, nullptr);
  if (!state) return;
  std::lock_guard lock(state->mutex);
  --state->unacked;
}

BLACKTREE_INLINE void InMemoryQueue::ack(Delivery& delivery) { ack(std::span<Delivery>(&delivery, 1)); }

BLACKTREE_INLINE void InMemoryQueue::ack(std::span<Delivery> deliveries) {
  std::lock_guard lock(state_->mutex);
  for (auto& delivery : deliveries) {
    if (!std::exchange(delivery.state_, nullptr)) continue;
    --state_->unacked;
    ++state_->acked;
  }
}

BLACKTREE_INLINE void InMemoryQueue::reject(Delivery& delivery, Disposition disposition, std::string_view reason) {
  if (!delivery.state_) return;
  if (disposition == Disposition::requeue) {
    settle(delivery);
    delivery.message_.job.redelivered = true;
    enqueue(state_, std::move(delivery.message_));
    return;
  }
  settle(delivery);
  std::lock_guard lock(state_->mutex);
  state_->dead_letters.push_back(DeadLetter{std::move(delivery.message_.job), std::string(reason)});
}

BLACKTREE_INLINE void InMemoryQueue::set_prefetch(std::size_t n) {
  std::lock_guard lock(state_->mutex);
  state_->prefetch = n;
}

BLACKTREE_INLINE void InMemoryQueue::close() {
  std::list<Receiver> receivers;
  {
    std::lock_guard lock(state_->mutex);
    state_->closed = true;
    receivers.swap(state_->receivers);
  }
  for (auto& receiver : receivers) fail(receiver, errc::source_closed);
}

BLACKTREE_INLINE void InMemoryQueue::CancelReceive::operator()(asio::cancellation_type type) {
  if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
               asio::cancellation_type::total)) == asio::cancellation_type::none)
    return;
  auto state = state_.lock();
  if (!state) return;
  Receiver receiver;
  {
    std::lock_guard lock(state->mutex);
    auto it = std::find_if(state->receivers.begin(), state->receivers.end(),
                           [this](const Receiver& r) { return r.id == id_; });
    if (it == state->receivers.end()) return;
    receiver = std::move(*it);
    state->receivers.erase(it);
  }
  fail(receiver, asio::error::operation_aborted);
}

BLACKTREE_INLINE std::size_t InMemoryQueue::ready() const {
  std::lock_guard lock(state_->mutex);
  return state_->ready.size();
}
BLACKTREE_INLINE std::size_t InMemoryQueue::unacked() const {
  std::lock_guard lock(state_->mutex);
  return state_->unacked;
}
BLACKTREE_INLINE std::size_t InMemoryQueue::max_unacked() const {
  std::lock_guard lock(state_->mutex);
  return state_->max_unacked;
}
BLACKTREE_INLINE std::size_t InMemoryQueue::acked() const {
  std::lock_guard lock(state_->mutex);
  return state_->acked;
}
BLACKTREE_INLINE std::size_t InMemoryQueue::prefetch() const {
  std::lock_guard lock(state_->mutex);
  return state_->prefetch;
}
BLACKTREE_INLINE std::vector<InMemoryQueue::DeadLetter> InMemoryQueue::dead_letters() const {
  std::lock_guard lock(state_->mutex);
  return state_->dead_letters;
}

// ---------------------------------------------------------------------------
// LoopbackTransport

BLACKTREE_INLINE LoopbackTransport::LoopbackTransport(asio::any_io_executor executor)
    : executor_(std::move(executor)), shared_(std::make_shared<Shared>()) {}

BLACKTREE_INLINE LoopbackTransport::~LoopbackTransport() {
  // Whatever still runs is lost with the transport.
  std::unique_lock lock(shared_->mutex);
  auto endpoints = shared_->endpoints;
  for (auto& [address, endpoint] : endpoints)
    end_calls(endpoint, errc::worker_lost, "transport destroyed", lock);
}

BLACKTREE_INLINE const Job& LoopbackTransport::Call::job() const noexcept { return state_->job; }
BLACKTREE_INLINE const WorkerInfo& LoopbackTransport::Call::worker() const noexcept { return state_->worker; }

BLACKTREE_INLINE void LoopbackTransport::Call::progress(std::string_view stage, std::string_view line) const {
  if (state_->done.load(std::memory_order_acquire) || !state_->progress) return;
  state_->progress(ProgressEvent{state_->job.id, state_->worker.id, Phase::running, std::string(stage),
                                 std::string(line)});
}

BLACKTREE_INLINE bool LoopbackTransport::Call::complete(JobResult result) const {
  if (result.job_id.empty()) result.job_id = state_->job.id;
  if (result.worker_id.empty()) result.worker_id = state_->worker.id;
  return finish(state_, std::error_code{}, std::move(result));
}

BLACKTREE_INLINE bool LoopbackTransport::Call::fail(std::error_code ec, std::string detail) const {
  JobResult result;
  result.error = std::move(detail);
  return finish(state_, ec, std::move(result));
}

BLACKTREE_INLINE bool LoopbackTransport::finish(const std::shared_ptr<CallState>& call, std::error_code ec,
                                                JobResult result) {
  if (call->done.exchange(true, std::memory_order_acq_rel)) return false;
  {
    std::lock_guard lock(call->shared->mutex);
    call->endpoint->calls.erase(call->id);
  }
  auto handler = std::move(call->handler);
  handler.complete(ec, std::move(result));
  return true;
}

BLACKTREE_INLINE void LoopbackTransport::end_calls(const std::shared_ptr<Endpoint>& endpoint, std::error_code ec,
                                                   const std::string& detail, std::unique_lock<std::mutex>& lock) {
  std::vector<std::shared_ptr<CallState>> calls;
  calls.reserve(endpoint->calls.size());
  for (auto& [id, call] : endpoint->calls) calls.push_back(call);
  lock.unlock();
  for (auto& call : calls) Call(call).fail(ec, detail);
  lock.lock();
}

BLACKTREE_INLINE void LoopbackTransport::CancelRun::operator()(asio::cancellation_type type) {
  if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
               asio::cancellation_type::total)) == asio::cancellation_type::none)
    return;
  if (auto call = call_.lock()) Call(call).fail(asio::error::operation_aborted, "cancelled");
}

BLACKTREE_INLINE std::shared_ptr<LoopbackTransport::Endpoint> LoopbackTransport::find_locked(
    std::string_view address) const {
  auto it = shared_->endpoints.find(address);
  return it == shared_->endpoints.end() ? nullptr : it->second;
}

BLACKTREE_INLINE void LoopbackTransport::add_endpoint(std::string address, std::uint32_t capacity, Runner runner) {
  auto endpoint = std::make_shared<Endpoint>();
  endpoint->address = address;
  endpoint->capacity = capacity;
  endpoint->runner = std::move(runner);
  std::lock_guard lock(shared_->mutex);
  endpoint->incarnation = address + "#" + std::to_string(++shared_->restarts);
  shared_->endpoints[std::move(address)] = std::move(endpoint);
}

BLACKTREE_INLINE void LoopbackTransport::set_runner(std::string_view address, Runner runner) {
  std::lock_guard lock(shared_->mutex);
  if (auto endpoint = find_locked(address)) endpoint->runner = std::move(runner);
}

BLACKTREE_INLINE void LoopbackTransport::set_mode(std::string_view address, Mode mode) {
  std::unique_lock lock(shared_->mutex);
  auto endpoint = find_locked(address);
  if (!endpoint) return;
  const Mode before = endpoint->mode;
  endpoint->mode = mode;
  if (mode == Mode::unreachable) {
    end_calls(endpoint, errc::worker_lost, "connection to " + endpoint->address + " reset", lock);
    return;
  }
  if (before != Mode::silent || mode != Mode::up) return;
  // Resumed: the runs offered while it hung start now.
  std::vector<std::shared_ptr<CallState>> resumed;
  for (auto& [id, call] : endpoint->calls) {
    if (!call->waiting) continue;
    call->waiting = false;
    resumed.push_back(call);
  }
  const Runner runner = endpoint->runner;
  lock.unlock();
  for (const auto& call : resumed) start_call(call, runner);
}

BLACKTREE_INLINE void LoopbackTransport::restart(std::string_view address) {
  std::unique_lock lock(shared_->mutex);
  auto endpoint = find_locked(address);
  if (!endpoint) return;
  endpoint->incarnation = endpoint->address + "#" + std::to_string(++shared_->restarts);
  endpoint->mode = Mode::up;
  end_calls(endpoint, errc::worker_lost, "worker at " + endpoint->address + " restarted", lock);
}

BLACKTREE_INLINE std::string LoopbackTransport::incarnation(std::string_view address) const {
  std::lock_guard lock(shared_->mutex);
  auto endpoint = find_locked(address);
  return endpoint ? endpoint->incarnation : std::string{};
}

BLACKTREE_INLINE std::size_t LoopbackTransport::running(std::string_view address) const {
  std::lock_guard lock(shared_->mutex);
  auto endpoint = find_locked(address);
  return endpoint ? endpoint->calls.size() : 0;
}

BLACKTREE_INLINE std::size_t LoopbackTransport::runs_started(std::string_view address) const {
  std::lock_guard lock(shared_->mutex);
  auto endpoint = find_locked(address);
  return endpoint ? endpoint->runs_started : 0;
}

BLACKTREE_INLINE std::shared_ptr<LoopbackTransport::CallState> LoopbackTransport::start_run(
    const WorkerInfo& worker, const Job& job, ProgressCallback progress, RunHandler handler) {
  std::unique_lock lock(shared_->mutex);
  auto endpoint = find_locked(worker.address);
  if (!endpoint || endpoint->mode == Mode::unreachable) {
    lock.unlock();
    JobResult result;
    result.error = "connection refused: nothing listens at " + worker.address;
    handler.complete(errc::worker_unreachable, std::move(result));
    return nullptr;
  }
  if (endpoint->mode == Mode::up && endpoint->calls.size() >= endpoint->capacity) {
    lock.unlock();
    JobResult result;
    result.error = "worker " + worker.id + " is full (" + std::to_string(endpoint->capacity) + " running)";
    handler.complete(errc::worker_refused, std::move(result));
    return nullptr;
  }
  if (!endpoint->runner && endpoint->mode == Mode::up) {
    // No runner: it succeeds at once, and nothing of it outlives this call.
    ++endpoint->runs_started;
    lock.unlock();
    if (progress) progress(ProgressEvent{job.id, worker.id, Phase::accepted});
    JobResult result;
    result.success = true;
    result.job_id = job.id;
    result.worker_id = worker.id;
    handler.complete(std::error_code{}, std::move(result));
    return nullptr;
  }
  auto call = std::make_shared<CallState>(job, worker);
  call->shared = shared_;
  call->endpoint = endpoint;
  call->id = endpoint->next_call++;
  const bool silent = endpoint->mode == Mode::silent;
  call->progress = std::move(progress);
  call->handler = std::move(handler);
  call->waiting = silent;
  endpoint->calls.emplace(call->id, call);
  ++endpoint->runs_started;
  Runner runner = endpoint->runner;
  lock.unlock();

  if (!silent) start_call(call, runner);
  return call;
}

BLACKTREE_INLINE void LoopbackTransport::start_call(const std::shared_ptr<CallState>& call, const Runner& runner) {
  if (call->progress) call->progress(ProgressEvent{call->job.id, call->worker.id, Phase::accepted});
  if (!runner) {
    JobResult result;
    result.success = true;
    Call(call).complete(std::move(result));
    return;
  }
  asio::post(executor_, [runner, call] { runner(Call(call)); });
}

BLACKTREE_INLINE std::shared_ptr<LoopbackTransport::PendingPing> LoopbackTransport::start_ping(
    const WorkerInfo& worker, std::chrono::milliseconds deadline, PingHandler handler) {
  std::unique_lock lock(shared_->mutex);
  auto endpoint = find_locked(worker.address);
  if (!endpoint || endpoint->mode == Mode::unreachable) {
    lock.unlock();
    handler.complete(errc::worker_unreachable, PingReply{});
    return nullptr;
  }
  if (endpoint->mode == Mode::silent) {
    lock.unlock();
    auto ping = std::make_shared<PendingPing>(executor_, std::move(handler));
    ping->timer.expires_after(deadline);
    ping->timer.async_wait([ping](std::error_code) { finish_ping(ping, errc::ping_timeout); });
    return ping;
  }
  PingReply reply;
  reply.worker_id = worker.id;
  reply.incarnation = endpoint->incarnation;
  reply.capacity = endpoint->capacity;
  reply.state = endpoint->calls.size() < endpoint->capacity ? WorkerState::free : WorkerState::busy;
  for (auto& [id, call] : endpoint->calls) reply.running_jobs.push_back(call->job.id);
  lock.unlock();
  handler.complete(std::error_code{}, std::move(reply));
  return nullptr;
}

BLACKTREE_INLINE void LoopbackTransport::finish_ping(const std::shared_ptr<PendingPing>& ping, std::error_code ec) {
  if (ping->done.exchange(true, std::memory_order_acq_rel)) return;
  auto handler = std::move(ping->handler);
  handler.complete(ec, PingReply{});
}

BLACKTREE_INLINE void LoopbackTransport::CancelPing::operator()(asio::cancellation_type type) {
  if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
               asio::cancellation_type::total)) == asio::cancellation_type::none)
    return;
  auto ping = ping_.lock();
  if (!ping) return;
  finish_ping(ping, asio::error::operation_aborted);
  asio::post(ping->strand, [ping] { ping->timer.cancel(); });
}

// ---------------------------------------------------------------------------
// InMemoryStatusSink

BLACKTREE_INLINE InMemoryStatusSink::InMemoryStatusSink(asio::any_io_executor executor)
    : executor_(std::move(executor)), state_(std::make_shared<State>()) {}

BLACKTREE_INLINE InMemoryStatusSink::HeldIds InMemoryStatusSink::start_publish(
    std::span<const JobResult* const> results, PublishCompletion::Single handler) {
  std::vector<PublishCompletion> one;
  one.emplace_back(std::move(handler));
  return start_publish(results, std::move(one));
}

BLACKTREE_INLINE InMemoryStatusSink::HeldIds InMemoryStatusSink::start_publish(
    std::span<const JobResult* const> results, PublishCompletion::Batch handler) {
  if (results.empty()) {
    handler.complete({});
    return {0, 0};
  }
  return start_publish(results, PublishCompletion::batch(results.size(), std::move(handler)));
}

BLACKTREE_INLINE InMemoryStatusSink::HeldIds InMemoryStatusSink::start_publish(
    std::span<const JobResult* const> results, std::vector<PublishCompletion> completions) {
  HeldIds held{0, 0};
  std::vector<std::pair<std::size_t, std::error_code>> settled;  // completed once the lock is released
  {
    std::lock_guard lock(state_->mutex);
    for (std::size_t i = 0; i < results.size(); ++i) {
      if (state_->fail_next > 0) {
        --state_->fail_next;
        settled.emplace_back(i, errc::sink_unavailable);
      } else if (state_->hold) {
        const std::uint64_t id = state_->next_held++;
        if (held.first == 0) held.first = id;
        held.second = id;
        state_->held.push_back(Held{id, *results[i], std::move(completions[i])});
      } else {
        state_->results.push_back(*results[i]);
        settled.emplace_back(i, std::error_code{});
      }
    }
  }
  state_->confirmed.notify_all();
  for (auto& [i, ec] : settled) completions[i].complete(ec);
  return held;
}

BLACKTREE_INLINE void InMemoryStatusSink::CancelPublish::operator()(asio::cancellation_type type) {
  if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
               asio::cancellation_type::total)) == asio::cancellation_type::none)
    return;
  auto state = state_.lock();
  if (!state) return;
  std::list<Held> withdrawn;
  {
    std::lock_guard lock(state->mutex);
    for (auto it = state->held.begin(); it != state->held.end();) {
      const auto next = std::next(it);
      if (it->id >= ids_.first && it->id <= ids_.second) withdrawn.splice(withdrawn.end(), state->held, it);
      it = next;
    }
  }
  for (auto& h : withdrawn) h.completion.complete(asio::error::operation_aborted);  // none left: already confirmed
}

BLACKTREE_INLINE void InMemoryStatusSink::hold_confirms(bool hold) {
  std::lock_guard lock(state_->mutex);
  state_->hold = hold;
}

BLACKTREE_INLINE std::size_t InMemoryStatusSink::confirm_held() {
  std::list<Held> held;
  {
    std::lock_guard lock(state_->mutex);
    held.swap(state_->held);
    for (auto& h : held) state_->results.push_back(h.result);
  }
  state_->confirmed.notify_all();
  for (auto& h : held) h.completion.complete(std::error_code{});
  return held.size();
}

BLACKTREE_INLINE void InMemoryStatusSink::fail_next(std::size_t n) {
  std::lock_guard lock(state_->mutex);
  state_->fail_next = n;
}

BLACKTREE_INLINE std::vector<JobResult> InMemoryStatusSink::results() const {
  std::lock_guard lock(state_->mutex);
  return state_->results;
}

BLACKTREE_INLINE std::size_t InMemoryStatusSink::size() const {
  std::lock_guard lock(state_->mutex);
  return state_->results.size();
}

BLACKTREE_INLINE std::size_t InMemoryStatusSink::held() const {
  std::lock_guard lock(state_->mutex);
  return state_->held.size();
}

BLACKTREE_INLINE bool InMemoryStatusSink::wait_for(std::size_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(state_->mutex);
  return state_->confirmed.wait_for(lock, timeout, [&] { return state_->results.size() >= n; });
}

}  // namespace blacktree::core
