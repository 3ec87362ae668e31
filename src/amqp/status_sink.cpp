// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/status_sink.hpp>

#include "connection_loop.hpp"

#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <utility>

namespace blacktree::amqp {
namespace detail {

namespace {
constexpr amqp_channel_t publish_channel = 1;
}

struct SinkState {
  using PublishHandler = core::CompletionHandler<void(std::error_code)>;
  struct Publish {
    std::string body;
    PublishHandler handler;
  };

  SinkState(AmqpOptions options, AmqpEndpoint endpoint) : loop(std::move(options), std::move(endpoint), "status") {}

  mutable std::mutex mutex;
  std::deque<Publish> queue;
  bool stopping = false;

  std::atomic<std::uint64_t> published{0}, confirmed{0}, failed{0};

  ConnectionLoop loop;  // last: its thread may use everything above until stop() joins it

  void fail(PublishHandler& handler) {
    failed.fetch_add(1);
    handler.complete(core::errc::sink_unavailable);
  }
};

namespace {

// Publishes what is queued, in confirm mode, and completes each publish on its confirm.
class SinkWork final : public ConnectionWork {
 public:
  explicit SinkWork(std::shared_ptr<SinkState> state) : state_(std::move(state)) {}

  core::Result<void> on_connected(Connection& conn) override {
    const AmqpOptions& o = state_->loop.options();
    if (o.declare && !o.status_queue.empty()) {
      if (auto declared = conn.declare_queue(publish_channel, o.status_queue); !declared) return declared;
    }
    if (auto confirming = conn.confirm_select(publish_channel); !confirming) return confirming;
    seq_ = 0;
    return {};
  }

  core::Result<void> on_ready(Connection& conn) override {
    if (auto published = publish_queued(conn); !published) return published;
    return read_methods(conn, [&](const amqp_frame_t& frame) { return on_method(conn, frame); });
  }

  // Whatever was not confirmed may or may not be durable: report it as not,
  // and the dispatcher publishes it again (the control plane may see it twice).
  void on_disconnected() override {
    for (auto& [seq, handler] : pending_) state_->fail(handler);
    pending_.clear();
    fail_queued();
  }

  // Raced with the disconnect; the dispatcher retries them.
  void on_woken_offline() override { fail_queued(); }

 private:
  void fail_queued() {
    std::deque<SinkState::Publish> queued;
    {
      std::lock_guard lock(state_->mutex);
      queued.swap(state_->queue);
    }
    for (auto& p : queued) state_->fail(p.handler);
  }

  core::Result<void> publish_queued(Connection& conn) {
    std::deque<SinkState::Publish> queued;
    {
      std::lock_guard lock(state_->mutex);
      queued.swap(state_->queue);
    }
    const AmqpOptions& o = state_->loop.options();
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 2;
    props.content_type = amqp_cstring_bytes("application/json");
    core::Result<void> result;
    for (auto& p : queued) {
      if (!result) {
        state_->fail(p.handler);
        continue;
      }
      const int rc = amqp_basic_publish(conn.get(), publish_channel, to_bytes(o.status_exchange),
                                        to_bytes(o.effective_status_routing_key()), 0, 0, &props, to_bytes(p.body));
      if (rc != AMQP_STATUS_OK) {
        result = core::Error{errc::publish_failed,
                             "cannot publish a status to " + conn.where() + ": " + amqp_error_string2(rc)};
        state_->fail(p.handler);
        continue;
      }
      state_->published.fetch_add(1);
      pending_.emplace(++seq_, std::move(p.handler));
    }
    return result;
  }

  core::Result<void> on_method(const Connection& conn, const amqp_frame_t& frame) {
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
      state_->loop.set_error("the broker at " + conn.where() + " refused (nacked) a status");
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
  std::uint64_t seq_ = 0;
  std::map<std::uint64_t, SinkState::PublishHandler> pending_;  // publish seq -> waiting for its confirm
};

}  // namespace
}  // namespace detail

AmqpStatusSink::AmqpStatusSink(asio::any_io_executor executor, AmqpOptions options) : executor_(std::move(executor)) {
  AmqpEndpoint endpoint = detail::resolve_or_throw(options);
  endpoint_description_ = endpoint.describe();
  state_ = std::make_shared<detail::SinkState>(std::move(options), std::move(endpoint));
  state_->loop.start(std::make_unique<detail::SinkWork>(state_));
}

AmqpStatusSink::~AmqpStatusSink() { stop(); }

void AmqpStatusSink::stop() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->loop.stop();
}

void AmqpStatusSink::start_publish(const core::JobResult& result, PublishHandler handler) {
  std::string body = wire::job_response_json(result);
  std::unique_lock lock(state_->mutex);
  if (state_->stopping || !state_->loop.connected()) {
    lock.unlock();
    state_->fail(handler);
    return;
  }
  state_->queue.push_back({std::move(body), std::move(handler)});
  lock.unlock();
  state_->loop.wake();
}

bool AmqpStatusSink::connected() const noexcept { return state_->loop.connected(); }

std::string AmqpStatusSink::last_error() const { return state_->loop.last_error(); }

AmqpSinkStats AmqpStatusSink::stats() const {
  AmqpSinkStats s;
  s.published = state_->published.load();
  s.confirmed = state_->confirmed.load();
  s.failed = state_->failed.load();
  s.connects = state_->loop.connects();
  s.connected = state_->loop.connected();
  return s;
}

}  // namespace blacktree::amqp
