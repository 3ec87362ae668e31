// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/event_publisher.hpp>

#include "connection.hpp"

#include <blacktree/wire/wire.hpp>

#include <atomic>
#include <deque>
#include <optional>
#include <stdexcept>
#include <utility>

namespace blacktree::amqp {
namespace detail {

namespace {
constexpr amqp_channel_t publish_channel = 1;
}

struct PublisherState {
  struct Event {
    core::ProgressEvent event;
    std::optional<core::JobResult> result;
  };

  PublisherState(AmqpOptions o, AmqpEndpoint e) : options(std::move(o)), endpoint(std::move(e)) {}

  const AmqpOptions options;
  const AmqpEndpoint endpoint;
  Waker waker;

  mutable std::mutex mutex;
  std::deque<Event> buffer;
  bool stopping = false;
  std::string last_error;

  std::atomic<bool> connected{false};
  std::atomic<std::uint64_t> published{0}, dropped{0}, connects{0};

  void set_error(std::string error) {
    std::lock_guard lock(mutex);
    last_error = std::move(error);
  }
};

namespace {

class PublisherLoop {
 public:
  explicit PublisherLoop(std::shared_ptr<PublisherState> state)
      : state_(std::move(state)), backoff_(state_->options.reconnect_initial, state_->options.reconnect_max) {}

  void run() noexcept {
    try {
      loop();
    } catch (const std::exception& e) {
      state_->set_error(std::string("amqp event publisher thread failed: ") + e.what());
    }
    state_->connected = false;
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
      std::string error = publish_buffered();
      if (error.empty()) error = read_methods(conn_, where_, [](const amqp_frame_t&) { return std::string(); });
      if (!error.empty()) {
        teardown(std::move(error));
        continue;
      }
      if (conn_.wait_for_traffic(state_->waker)) teardown("lost the connection to " + where_ + ": missed heartbeats");
    }
  }

  // While disconnected, events wait in the buffer (up to its bound).
  void wait_for_retry(std::chrono::milliseconds delay) {
    const auto until = std::chrono::steady_clock::now() + delay;
    while (!stopping()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= until) return;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now) + std::chrono::milliseconds(1);
      if (wait(-1, state_->waker, left).woken) state_->waker.drain();
    }
  }

  std::string connect() {
    const AmqpOptions& o = state_->options;
    if (auto error = conn_.open(state_->endpoint, o, "events"); !error.empty()) return error;
    if (o.declare && !o.events_exchange.empty()) {
      if (auto error = conn_.declare_exchange(publish_channel, o.events_exchange, o.events_exchange_type);
          !error.empty())
        return error;
    }
    state_->connects.fetch_add(1);
    state_->connected = true;
    return {};
  }

  void teardown(std::string error) {
    if (!error.empty()) state_->set_error(std::move(error));
    state_->connected = false;
    conn_.abandon();
  }

  std::string publish_buffered() {
    state_->waker.drain();
    std::deque<PublisherState::Event> events;
    {
      std::lock_guard lock(state_->mutex);
      events.swap(state_->buffer);
    }
    const AmqpOptions& o = state_->options;
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 1;  // transient: progress is worth nothing after a broker restart
    props.content_type = amqp_cstring_bytes("application/json");
    for (std::size_t i = 0; i < events.size(); ++i) {
      const auto& e = events[i];
      const std::string body = wire::job_event_json(e.event, e.result ? &*e.result : nullptr);
      const std::string key = o.events_routing_prefix + e.event.job_id;
      const int rc = amqp_basic_publish(conn_.get(), publish_channel, to_bytes(o.events_exchange), to_bytes(key), 0,
                                        0, &props, to_bytes(body));
      if (rc != AMQP_STATUS_OK) {
        state_->dropped.fetch_add(events.size() - i);
        return "cannot publish an event to " + where_ + ": " + amqp_error_string2(rc);
      }
      state_->published.fetch_add(1);
    }
    return {};
  }

  std::shared_ptr<PublisherState> state_;
  const std::string where_ = state_->endpoint.describe();
  Connection conn_;
  Backoff backoff_;
};

}  // namespace
}  // namespace detail

AmqpEventPublisher::AmqpEventPublisher(AmqpOptions options) {
  std::string error;
  auto endpoint = resolve_endpoint(options, &error);
  if (!endpoint) throw std::invalid_argument(error);
  state_ = std::make_shared<detail::PublisherState>(std::move(options), std::move(*endpoint));
  thread_ = std::thread([state = state_] { detail::PublisherLoop(state).run(); });
}

AmqpEventPublisher::~AmqpEventPublisher() { stop(); }

void AmqpEventPublisher::stop() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
    state_->dropped.fetch_add(state_->buffer.size());
    state_->buffer.clear();
  }
  state_->waker.notify();
  std::lock_guard lock(stop_mutex_);
  if (thread_.joinable()) thread_.join();
}

bool AmqpEventPublisher::publish(const core::ProgressEvent& event) { return enqueue(event, nullptr); }

bool AmqpEventPublisher::publish_result(const core::ProgressEvent& event, const core::JobResult& result) {
  return enqueue(event, &result);
}

bool AmqpEventPublisher::enqueue(const core::ProgressEvent& event, const core::JobResult* result) {
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopping || state_->buffer.size() >= state_->options.events_buffer) {
      state_->dropped.fetch_add(1);
      return false;
    }
    detail::PublisherState::Event e{event, std::nullopt};
    if (result) e.result = *result;
    state_->buffer.push_back(std::move(e));
  }
  state_->waker.notify();
  return true;
}

bool AmqpEventPublisher::connected() const noexcept { return state_->connected.load(); }

std::string AmqpEventPublisher::last_error() const {
  std::lock_guard lock(state_->mutex);
  return state_->last_error;
}

AmqpEventStats AmqpEventPublisher::stats() const {
  AmqpEventStats s;
  s.published = state_->published.load();
  s.dropped = state_->dropped.load();
  s.connects = state_->connects.load();
  s.connected = state_->connected.load();
  std::lock_guard lock(state_->mutex);
  s.buffered = state_->buffer.size();
  return s;
}

}  // namespace blacktree::amqp
