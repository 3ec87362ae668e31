// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <blacktree/core/concepts.hpp>
#include <blacktree/core/error.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/worker_pool.hpp>

#include <asio/any_io_executor.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/dispatch.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace blacktree::core {

struct HealthOptions {
  std::chrono::milliseconds interval{1000};  ///< between pings of one worker
  std::chrono::milliseconds timeout{500};    ///< a ping's deadline
  std::uint32_t misses_before_dead = 2;      ///< consecutive failed pings that make a worker dead
  /// A worker dead for longer than this (since it last answered) is
  /// deregistered, so crashed workers with generated ids do not pile up; one
  /// that comes back registers again by itself. Checked once per `interval`.
  /// Zero keeps dead workers listed.
  std::chrono::milliseconds forget_dead_after{0};
};

/// Hooks for logs and metrics; all do nothing by default (see DispatcherObserver).
/// They run on the monitor's strand.
struct HealthObserver {
  void on_ping_ok(const WorkerInfo&, std::chrono::steady_clock::duration /*round_trip*/) {}
  void on_ping_failed(const WorkerInfo&, std::error_code, std::uint32_t /*misses*/) {}
  void on_dead(const WorkerInfo&, std::string_view /*reason*/) {}
  void on_alive(const WorkerInfo&) {}  ///< registering or dead, now answering
  /// Dead longer than HealthOptions::forget_dead_after: deregistered from the
  /// pool just before this call (its owner may drop what it keeps per worker).
  void on_forgotten(const WorkerInfo&, std::string_view /*reason*/) {}
};

/// Pings every registered worker on an interval. A worker that answers is
/// alive (registering and dead workers become free; a changed incarnation
/// voids its old leases); one that misses `misses_before_dead` pings in a row
/// is marked dead, which takes it out of the free set and makes the
/// dispatcher report its running jobs lost. A newly registered worker is
/// pinged at once, so it takes jobs as soon as it is known to answer. With
/// `forget_dead_after` set, a worker dead for longer is deregistered.
///
/// Each worker is pinged once per interval, and the pings of a round are
/// spread over the interval (in slices of at least `min_slice`), so 10,000
/// workers cost the transport, the pool and the strand a steady trickle
/// instead of a burst every interval.
template <WorkerTransport Transport, class Pool = WorkerPool, class Observer = HealthObserver>
class HealthMonitor {
 public:
  using executor_type = asio::strand<asio::any_io_executor>;

  HealthMonitor(asio::any_io_executor executor, Transport& transport, Pool& pool, HealthOptions options = {},
                Observer observer = {})
      : impl_(std::make_shared<Impl>(asio::make_strand(std::move(executor)), transport, pool, options,
                                     std::move(observer))) {
    subscription_ = pool.subscribe([weak = std::weak_ptr<Impl>(impl_)](const WorkerEvent& event) {
      if (auto self = weak.lock()) asio::post(self->strand, [self, event] { self->on_event(event); });
    });
  }
  HealthMonitor(const HealthMonitor&) = delete;
  HealthMonitor& operator=(const HealthMonitor&) = delete;
  ~HealthMonitor() {
    subscription_.reset();
    impl_->detached.store(true, std::memory_order_release);
    stop();
  }

  executor_type get_executor() const noexcept { return impl_->strand; }

  void start() {
    asio::dispatch(impl_->strand, [impl = impl_] {
      if (impl->running) return;
      impl->running = true;
      impl->tick();
    });
  }

  /// No more pings; those in flight are cancelled, and what they bring back
  /// counts for nothing, so nothing of the monitor stays pending on the
  /// executor. start() again picks up where it left off (pool events are
  /// still followed, and ignored while stopped).
  void stop() {
    asio::dispatch(impl_->strand, [impl = impl_] {
      impl->running = false;
      impl->timer.cancel();
      // Not once the monitor is destroyed: the transport may be gone too.
      if (!impl->detached.load(std::memory_order_acquire)) impl->cancel_pings();
    });
  }

 private:
  // One registration's ping state. An entry is dropped when its worker is
  // deregistered and a later registration gets a new epoch: a reply to a ping
  // sent in an earlier epoch says nothing about the current registration.
  struct Probe {
    std::uint32_t misses = 0;
    bool in_flight = false;
    std::uint64_t epoch = 0;
  };

  struct Impl : std::enable_shared_from_this<Impl> {
    Impl(executor_type s, Transport& t, Pool& p, HealthOptions o, Observer obs)
        : strand(std::move(s)), transport(t), pool(p), options(o), observer(std::move(obs)), timer(strand) {}

    executor_type strand;
    Transport& transport;
    Pool& pool;
    HealthOptions options;
    Observer observer;
    asio::steady_timer timer;
    bool running = false;
    // Set by ~HealthMonitor at once (not through the strand): handlers already
    // queued must not touch the transport or pool, which may go next.
    std::atomic<bool> detached{false};
    std::uint64_t next_epoch = 1;
    std::unordered_map<std::string, Probe> probes;
    // The pings in flight, for stop() to cancel; each one's handler holds
    // its signal too, and takes it out of here when it completes.
    std::unordered_set<std::shared_ptr<asio::cancellation_signal>> pings;
    // The round in progress: who is pinged in it, and when it started.
    std::vector<std::shared_ptr<const WorkerInfo>> round;
    std::chrono::steady_clock::time_point round_start;
    std::size_t slices = 1;

    static constexpr std::chrono::milliseconds min_slice{10};

    Probe& probe_of(const std::string& id) {
      auto [it, inserted] = probes.try_emplace(id);
      if (inserted) it->second.epoch = next_epoch++;
      return it->second;
    }

    void tick() {
      if (!running || detached.load(std::memory_order_acquire)) return;
      auto workers = pool.snapshot();
      std::unordered_set<std::string_view> known;
      known.reserve(workers.size());
      for (const auto& w : workers) known.insert(w.info->id);
      std::erase_if(probes, [&](const auto& entry) { return !known.contains(entry.first); });
      const auto now = std::chrono::steady_clock::now();
      round.clear();
      round.reserve(workers.size());
      for (const auto& w : workers) {
        if (should_forget(w, now)) {
          forget(w.info);
        } else {
          round.push_back(w.info);
        }
      }
      round_start = now;
      const auto most = static_cast<std::size_t>(std::max<std::int64_t>(1, options.interval / min_slice));
      slices = std::clamp<std::size_t>(round.size(), 1, most);
      step(0);
    }

    // Pings slice `slice` of the round, then waits for the next slice (at
    // its share of the interval) or, after the last, for the next round.
    void step(std::size_t slice) {
      const std::size_t n = round.size();
      for (std::size_t i = slice * n / slices; i < (slice + 1) * n / slices; ++i) probe(round[i]);
      const bool last = slice + 1 >= slices;
      const auto share = options.interval * static_cast<std::int64_t>(slice + 1) / static_cast<std::int64_t>(slices);
      timer.expires_at(round_start + (last ? options.interval : share));
      timer.async_wait([self = this->shared_from_this(), slice, last](std::error_code ec) {
        if (ec || !self->running || self->detached.load(std::memory_order_acquire)) return;
        if (last) {
          self->tick();
        } else {
          self->step(slice + 1);
        }
      });
    }

    bool should_forget(const WorkerSnapshot& w, std::chrono::steady_clock::time_point now) const {
      return options.forget_dead_after.count() > 0 && w.state == WorkerState::dead &&
             now - w.last_seen > options.forget_dead_after;
    }

    void forget(const std::shared_ptr<const WorkerInfo>& info) {
      const auto after = options.forget_dead_after;
      std::string reason = "dead for more than " + (after.count() % 1000 == 0
                                                        ? std::to_string(after.count() / 1000) + " s"
                                                        : std::to_string(after.count()) + " ms");
      // Registered again (or gone) since the snapshot: not ours to forget.
      const auto current = pool.find(info->id);
      if (!current || current->info != info || current->state != WorkerState::dead) return;
      if (!pool.deregister(info->id, reason)) return;
      observer.on_forgotten(*info, reason);
    }

    void probe(const std::shared_ptr<const WorkerInfo>& info) {
      auto& p = probe_of(info->id);
      if (p.in_flight) return;
      p.in_flight = true;
      const auto sent = std::chrono::steady_clock::now();
      auto cancel = std::make_shared<asio::cancellation_signal>();
      pings.insert(cancel);
      transport.async_ping(
          *info, options.timeout,
          asio::bind_cancellation_slot(
              cancel->slot(), asio::bind_executor(strand, [self = this->shared_from_this(), info, sent,
                                                           epoch = p.epoch, cancel](std::error_code ec,
                                                                                    PingReply reply) {
                self->pings.erase(cancel);
                self->on_reply(info, sent, epoch, ec, std::move(reply));
              })));
    }

    void cancel_pings() {
      // A copy: a transport that completes through asio::dispatch runs the
      // handler, which erases from `pings`, inside emit.
      const std::vector<std::shared_ptr<asio::cancellation_signal>> in_flight(pings.begin(), pings.end());
      for (const auto& cancel : in_flight) cancel->emit(asio::cancellation_type::terminal);
    }

    void on_reply(const std::shared_ptr<const WorkerInfo>& info, std::chrono::steady_clock::time_point sent,
                  std::uint64_t epoch, std::error_code ec, PingReply reply) {
      auto it = probes.find(info->id);
      // Deregistered (and maybe registered again) since the ping went out.
      if (it == probes.end() || it->second.epoch != epoch) return;
      it->second.in_flight = false;
      if (!running || detached.load(std::memory_order_acquire)) return;
      if (!ec && !reply.worker_id.empty() && reply.worker_id != info->id)
        ec = make_error_code(errc::worker_unreachable);  // someone else answers at that address now
      const auto known = pool.find(info->id);
      if (!known) return;
      // A failed ping sent to details the worker has since replaced (it
      // registered again, restarted, was updated) says nothing about the
      // current registration; the next ping, sent to the current one, does.
      if (ec && known->info != info) return;
      if (!ec) {
        it->second.misses = 0;
        observer.on_ping_ok(*info, std::chrono::steady_clock::now() - sent);
        const bool was_down = known->state == WorkerState::registering || known->state == WorkerState::dead;
        // Fails only if the worker was deregistered since pool.find above:
        // then there is nothing left to mark.
        (void)pool.mark_alive(info->id, reply.incarnation);
        // A worker shutting down says so: offer it nothing new. (Not undone
        // here when it stops saying so: a drain may also be an operator's.)
        if (reply.state == WorkerState::draining) (void)pool.drain(info->id);
        if (was_down) observer.on_alive(*info);
        return;
      }
      const std::uint32_t misses = ++it->second.misses;
      observer.on_ping_failed(*info, ec, misses);
      if (misses >= options.misses_before_dead && known->state != WorkerState::dead) {
        std::string reason = "missed " + std::to_string(misses) + " pings in a row (last: " + ec.message() + ")";
        observer.on_dead(*info, reason);
        (void)pool.mark_dead(info->id, std::move(reason));  // deregistered meanwhile: nothing to mark
      }
    }

    void on_event(const WorkerEvent& event) {
      if (detached.load(std::memory_order_acquire)) return;
      if (event.removed) {
        // Even while stopped: a later registration starts a new epoch.
        probes.erase(event.info->id);
        return;
      }
      if (!running || event.to != WorkerState::registering) return;
      probe_of(event.info->id).misses = 0;
      probe(event.info);
    }
  };

  std::shared_ptr<Impl> impl_;
  typename Pool::Subscription subscription_;
};

}  // namespace blacktree::core
