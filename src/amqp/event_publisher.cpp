// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/event_publisher.hpp>

#include "connection_loop.hpp"

#include <blacktree/wire/wire.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <mutex>
#include <optional>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace blacktree::amqp {
namespace detail {

namespace {
constexpr amqp_channel_t events_channel = 1;
}

struct PublisherState {
  struct Event {
    core::ProgressEvent event;
    std::optional<core::JobResult> result;
  };

  PublisherState(AmqpOptions options, Brokers brokers) : loop(std::move(options), std::move(brokers), "events") {}

  mutable std::mutex mutex;
  std::deque<Event> buffer;  // events wait here for their batch, or while disconnected (up to its bound)
  std::chrono::steady_clock::time_point first_at;  // when the buffer last went from empty to not
  bool stopping = false;

  std::atomic<std::uint64_t> published{0}, dropped{0}, coalesced{0};

  ConnectionLoop loop;  // last: its thread may use everything above until stop() joins it
};

namespace {

// Which events of one drain of the buffer say nothing a later one does not:
// a bare phase change (no line, no result) followed by another event of the
// same job, which carries the newer phase. A job that is accepted and
// finishes between two drains is then one message (its result), not three;
// at light load each drain holds one event and nothing is left out.
std::vector<bool> superseded(const std::deque<PublisherState::Event>& events) {
  std::vector<bool> out(events.size(), false);
  if (events.size() < 2) return out;
  std::unordered_set<std::string_view> later;  // jobs with an event after this one
  for (std::size_t i = events.size(); i-- > 0;) {
    const PublisherState::Event& e = events[i];
    const std::string_view job = e.event.job_id;
    if (e.event.line.empty() && !e.result && later.contains(job)) {
      out[i] = true;
    } else {
      later.insert(job);
    }
  }
  return out;
}

// Publishes what is buffered, unconfirmed: events are best effort.
class PublisherWork final : public ConnectionWork {
 public:
  explicit PublisherWork(std::shared_ptr<PublisherState> state) : state_(std::move(state)) {}

  core::Result<void> on_connected(Connection& conn) override {
    const AmqpOptions& o = state_->loop.options();
    if (o.declare && !o.events_exchange.empty())
      return conn.declare_exchange(events_channel, o.events_exchange, o.events_exchange_type);
    return {};
  }

  core::Result<void> on_ready(Connection& conn) override {
    if (std::chrono::steady_clock::now() >= wake_at()) {
      if (auto published = publish_buffered(conn); !published) return published;
    }
    return read_methods(conn, [](const amqp_frame_t&) { return core::Result<void>(); });
  }

  // When the batch that is gathering is due.
  std::chrono::steady_clock::time_point wake_at() const override {
    std::lock_guard lock(state_->mutex);
    if (state_->buffer.empty()) return std::chrono::steady_clock::time_point::max();
    return state_->first_at + state_->loop.options().events_batch_window;
  }

  // What is buffered still goes out before the connection closes.
  core::Result<void> on_stopping(Connection& conn) override { return publish_buffered(conn); }

 private:
  core::Result<void> publish_buffered(Connection& conn) {
    std::deque<PublisherState::Event> events;
    {
      std::lock_guard lock(state_->mutex);
      events.swap(state_->buffer);
    }
    const AmqpOptions& o = state_->loop.options();
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 1;  // transient: progress is worth nothing after a broker restart
    props.content_type = amqp_cstring_bytes("application/json");
    const std::vector<bool> skip = superseded(events);
    const CorkedSends corked(conn, static_cast<std::size_t>(std::count(skip.begin(), skip.end(), false)));
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (skip[i]) {
        state_->coalesced.fetch_add(1);
        continue;
      }
      const auto& e = events[i];
      const std::string body = wire::job_event_json(e.event, e.result ? &*e.result : nullptr);
      const std::string key = o.events_routing_prefix + e.event.job_id;
      if (key.size() > 255) {
        // An AMQP short string: rabbitmq-c would fail the publish and the
        // connection with it, for every event of that job.
        state_->dropped.fetch_add(1);
        if (!warned_long_key_) {
          warned_long_key_ = true;
          state_->loop.log(LogLevel::warning, "dropping the events of a job whose routing key would exceed 255 bytes (" +
                                                  std::to_string(key.size()) + ")");
        }
        continue;
      }
      const int rc = amqp_basic_publish(conn.get(), events_channel, to_bytes(o.events_exchange), to_bytes(key), 0,
                                        0, &props, to_bytes(body));
      if (rc != AMQP_STATUS_OK) {
        state_->dropped.fetch_add(events.size() - i);
        return core::Error{errc::publish_failed,
                           "cannot publish an event to " + conn.where() + ": " + amqp_error_string2(rc)};
      }
      state_->published.fetch_add(1);
    }
    return {};
  }

  std::shared_ptr<PublisherState> state_;
  bool warned_long_key_ = false;
};

}  // namespace
}  // namespace detail

AmqpEventPublisher::AmqpEventPublisher(AmqpOptions options) {
  detail::Brokers brokers = detail::resolve_or_throw(options);
  state_ = std::make_shared<detail::PublisherState>(std::move(options), std::move(brokers));
  state_->loop.start(std::make_unique<detail::PublisherWork>(state_));
}

AmqpEventPublisher::~AmqpEventPublisher() { stop(); }

void AmqpEventPublisher::stop() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->loop.stop();  // publishes what is buffered, when connected
  std::lock_guard lock(state_->mutex);
  state_->dropped.fetch_add(state_->buffer.size());
  state_->buffer.clear();
}

bool AmqpEventPublisher::publish(const core::ProgressEvent& event) { return enqueue(event, nullptr); }

bool AmqpEventPublisher::publish_result(const core::ProgressEvent& event, const core::JobResult& result) {
  return enqueue(event, &result);
}

bool AmqpEventPublisher::enqueue(const core::ProgressEvent& event, const core::JobResult* result) {
  bool first = false;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopping || state_->buffer.size() >= state_->loop.options().events_buffer) {
      state_->dropped.fetch_add(1);
      return false;
    }
    detail::PublisherState::Event e{event, std::nullopt};
    if (result) e.result = *result;
    first = state_->buffer.empty();
    if (first) state_->first_at = std::chrono::steady_clock::now();
    state_->buffer.push_back(std::move(e));
  }
  // The first event of a batch sets the connection thread's deadline; the
  // others of its window join it without waking the thread.
  if (first || state_->loop.options().events_batch_window.count() == 0) state_->loop.wake();
  return true;
}

bool AmqpEventPublisher::connected() const noexcept { return state_->loop.connected(); }

std::string AmqpEventPublisher::endpoint() const { return state_->loop.where(); }

std::string AmqpEventPublisher::last_error() const { return state_->loop.last_error(); }

AmqpEventStats AmqpEventPublisher::stats() const {
  AmqpEventStats s;
  s.published = state_->published.load();
  s.dropped = state_->dropped.load();
  s.coalesced = state_->coalesced.load();
  s.connects = state_->loop.connects();
  s.connected = state_->loop.connected();
  std::lock_guard lock(state_->mutex);
  s.buffered = state_->buffer.size();
  return s;
}

}  // namespace blacktree::amqp
