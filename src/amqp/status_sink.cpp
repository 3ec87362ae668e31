// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/status_sink.hpp>

#include "connection.hpp"

#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace blacktree::amqp {
namespace detail {

namespace {
constexpr amqp_channel_t publish_channel = 1;
}

struct SinkState {
  using PublishHandler = core::detail::erased_handler<void(std::error_code)>;
  struct Publish {
    std::string body;
    PublishHandler handler;
  };

  SinkState(AmqpOptions o, AmqpEndpoint e) : options(std::move(o)), endpoint(std::move(e)) {}

  const AmqpOptions options;
  const AmqpEndpoint endpoint;
  Waker waker;

  mutable std::mutex mutex;
  std::deque<Publish> queue;
  bool stopping = false;
  std::string last_error;

  std::atomic<bool> connected{false};
  std::atomic<std::uint64_t> published{0}, confirmed{0}, failed{0}, connects{0};

  void set_error(std::string error) {
    std::lock_guard lock(mutex);
    last_error = std::move(error);
  }
  void fail(PublishHandler& handler) {
    failed.fetch_add(1);
    handler.complete(core::errc::sink_unavailable);
  }
};

namespace {

class SinkLoop {
 public:
  explicit SinkLoop(std::shared_ptr<SinkState> state)
      : state_(std::move(state)), backoff_(state_->options.reconnect_initial, state_->options.reconnect_max) {}

  void run() noexcept {
    try {
      loop();
    } catch (const std::exception& e) {
      state_->set_error(std::string("amqp status sink thread failed: ") + e.what());
    }
    state_->connected = false;
    fail_all();
    if (conn_.is_open()) conn_.close();
  }

 private:
  bool stopping() const {
    std::lock_guard lock(state_->mutex);
    return state_->stopping;
  }

  void loop() {
    while (!stopping()) {
      if (!conn_.is_open()) {
        if (std::string error = connect(); !error.empty()) {
          teardown(std::move(error));
          wait_for_retry(backoff_.next());
          continue;
        }
        backoff_.reset();
      }
      std::string error = publish_queued();
      if (error.empty())
        error = read_methods(conn_, where_, [this](const amqp_frame_t& frame) { return on_method(frame); });
      if (!error.empty()) {
        teardown(std::move(error));
        continue;
      }
      if (conn_.wait_for_traffic(state_->waker)) teardown("lost the connection to " + where_ + ": missed heartbeats");
    }
  }

  void wait_for_retry(std::chrono::milliseconds delay) {
    const auto until = std::chrono::steady_clock::now() + delay;
    while (!stopping()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) return;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now) + std::chrono::milliseconds(1);
      if (wait(-1, state_->waker, left).woken) {
        state_->waker.drain();
        fail_queued();  // raced with the disconnect; the dispatcher retries them
      }
    }
  }

  std::string connect() {
    const AmqpOptions& o = state_->options;
    if (auto error = conn_.open(state_->endpoint, o, "status"); !error.empty()) return error;
    if (o.declare && !o.status_queue.empty()) {
      if (auto error = conn_.declare_queue(publish_channel, o.status_queue); !error.empty()) return error;
    }
    if (auto error = conn_.confirm_select(publish_channel); !error.empty()) return error;
    seq_ = 0;
    state_->connects.fetch_add(1);
    state_->connected = true;
    return {};
  }

  void teardown(std::string error) {
    if (!error.empty()) state_->set_error(std::move(error));
    state_->connected = false;
    conn_.abandon();
    fail_all();
  }

  void fail_queued() {
    std::deque<SinkState::Publish> queued;
    {
      std::lock_guard lock(state_->mutex);
      queued.swap(state_->queue);
    }
    for (auto& p : queued) state_->fail(p.handler);
  }

  // Whatever was not confirmed may or may not be durable: report it as not,
  // and the dispatcher publishes it again (the control plane may see it twice).
  void fail_all() {
    for (auto& [seq, handler] : pending_) state_->fail(handler);
    pending_.clear();
    fail_queued();
  }

  std::string publish_queued() {
    state_->waker.drain();
    std::deque<SinkState::Publish> queued;
    {
      std::lock_guard lock(state_->mutex);
      queued.swap(state_->queue);
    }
    const AmqpOptions& o = state_->options;
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 2;
    props.content_type = amqp_cstring_bytes("application/json");
    std::string error;
    for (auto& p : queued) {
      if (!error.empty()) {
        state_->fail(p.handler);
        continue;
      }
      const int rc = amqp_basic_publish(conn_.get(), publish_channel, to_bytes(o.status_exchange),
                                        to_bytes(o.effective_status_routing_key()), 0, 0, &props, to_bytes(p.body));
      if (rc != AMQP_STATUS_OK) {
        error = "cannot publish a status to " + where_ + ": " + amqp_error_string2(rc);
        state_->fail(p.handler);
        continue;
      }
      state_->published.fetch_add(1);
      pending_.emplace(++seq_, std::move(p.handler));
    }
    return error;
  }

  std::string on_method(const amqp_frame_t& frame) {
    const auto id = frame.payload.method.id;
    if (id != AMQP_BASIC_ACK_METHOD && id != AMQP_BASIC_NACK_METHOD) return {};
    std::uint64_t tag;
    bool multiple;
    if (id == AMQP_BASIC_ACK_METHOD) {
      const auto* m = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
      tag = m->delivery_tag;
      multiple = m->multiple != 0;
    } else {
      const auto* m = static_cast<const amqp_basic_nack_t*>(frame.payload.method.decoded);
      tag = m->delivery_tag;
      multiple = m->multiple != 0;
      state_->set_error("the broker at " + where_ + " refused (nacked) a status");
    }
    auto end = pending_.upper_bound(tag);
    auto begin = multiple ? pending_.begin() : pending_.find(tag);
    if (begin == pending_.end()) return {};
    for (auto it = begin; it != end; ++it) {
      if (id == AMQP_BASIC_ACK_METHOD) {
        state_->confirmed.fetch_add(1);
        it->second.complete(std::error_code{});
      } else {
        state_->fail(it->second);
      }
    }
    pending_.erase(begin, end);
    return {};
  }

  std::shared_ptr<SinkState> state_;
  const std::string where_ = state_->endpoint.describe();
  Connection conn_;
  Backoff backoff_;
  std::uint64_t seq_ = 0;
  std::map<std::uint64_t, SinkState::PublishHandler> pending_;  // publish seq -> waiting for its confirm
};

}  // namespace
}  // namespace detail

namespace {
AmqpEndpoint resolve_or_throw(const AmqpOptions& options) {
  std::string error;
  auto endpoint = resolve_endpoint(options, &error);
  if (!endpoint) throw std::invalid_argument(error);
  return *endpoint;
}
}  // namespace

AmqpStatusSink::AmqpStatusSink(asio::any_io_executor executor, AmqpOptions options) : executor_(std::move(executor)) {
  AmqpEndpoint endpoint = resolve_or_throw(options);
  endpoint_description_ = endpoint.describe();
  state_ = std::make_shared<detail::SinkState>(std::move(options), std::move(endpoint));
  thread_ = std::thread([state = state_] { detail::SinkLoop(state).run(); });
}

AmqpStatusSink::~AmqpStatusSink() { stop(); }

void AmqpStatusSink::stop() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->waker.notify();
  std::lock_guard lock(stop_mutex_);
  if (thread_.joinable()) thread_.join();
}

void AmqpStatusSink::start_publish(const core::JobResult& result, PublishHandler handler) {
  std::string body = wire::job_response_json(result);
  std::unique_lock lock(state_->mutex);
  if (state_->stopping || !state_->connected.load()) {
    lock.unlock();
    state_->fail(handler);
    return;
  }
  state_->queue.push_back({std::move(body), std::move(handler)});
  lock.unlock();
  state_->waker.notify();
}

bool AmqpStatusSink::connected() const noexcept { return state_->connected.load(); }

std::string AmqpStatusSink::last_error() const {
  std::lock_guard lock(state_->mutex);
  return state_->last_error;
}

AmqpSinkStats AmqpStatusSink::stats() const {
  AmqpSinkStats s;
  s.published = state_->published.load();
  s.confirmed = state_->confirmed.load();
  s.failed = state_->failed.load();
  s.connects = state_->connects.load();
  s.connected = state_->connected.load();
  return s;
}

}  // namespace blacktree::amqp
