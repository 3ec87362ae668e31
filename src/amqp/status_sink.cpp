// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/status_sink.hpp>

#include "confirms.hpp"
#include "connection_loop.hpp"

#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>

#include <atomic>
#include <deque>
#include <mutex>
#include <utility>

namespace blacktree::amqp {
namespace detail {

namespace {
constexpr amqp_channel_t status_channel = 1;
}

struct SinkState {
  struct Publish {
    std::string body;
    std::string status_id;
    core::PublishCompletion completion;
  };

  SinkState(AmqpOptions options, Brokers brokers) : loop(std::move(options), std::move(brokers), "status") {}

  mutable std::mutex mutex;
  std::deque<Publish> queue;
  bool stopping = false;

  std::atomic<std::uint64_t> published{0}, confirmed{0}, failed{0}, returned{0};

  ConnectionLoop loop;  // last: its thread may use everything above until stop() joins it

  void fail(core::PublishCompletion& completion) {
    failed.fetch_add(1);
    completion.complete(core::errc::sink_unavailable);
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
      std::string note;
      if (auto declared = conn.declare_queue(status_channel, o.status_queue, o.queue_type, &note); !declared)
        return declared;
      if (!note.empty()) state_->loop.log(LogLevel::warning, note);
    }
    if (auto confirming = conn.confirm_select(status_channel); !confirming) return confirming;
    confirms_.reset();
    return {};
  }

  core::Result<void> on_ready(Connection& conn) override {
    if (auto published = publish_queued(conn); !published) return published;
    return read_frames(conn, [&](const amqp_frame_t& frame) { return on_frame(conn, frame); });
  }

  // Whatever was not confirmed may or may not be durable: report it as not,
  // and the dispatcher publishes it again (the control plane may see it twice,
  // with the same message-id).
  void on_disconnected() override {
    for (auto& completion : confirms_.take_all()) state_->fail(completion);
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
    for (auto& p : queued) state_->fail(p.completion);
  }

  core::Result<void> publish_queued(Connection& conn) {
    std::deque<SinkState::Publish> queued;
    {
      std::lock_guard lock(state_->mutex);
      queued.swap(state_->queue);
    }
    const AmqpOptions& o = state_->loop.options();
    core::Result<void> result;
    const CorkedSends corked(conn, queued.size());
    for (auto& p : queued) {
      if (!result) {
        state_->fail(p.completion);
        continue;
      }
      amqp_table_entry_t seq = publish_seq_entry(confirms_.next_seq());
      amqp_basic_properties_t props{};
      props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG;
      props.delivery_mode = 2;
      props.content_type = amqp_cstring_bytes("application/json");
      props.headers = amqp_table_t{1, &seq};
      // A short string on the wire: an id that does not fit is left out, not cut.
      if (!p.status_id.empty() && p.status_id.size() <= 255) {
        props._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        props.message_id = to_bytes(p.status_id);
      }
      // mandatory: a status no queue takes comes back (basic.return) instead of vanishing.
      const int rc = amqp_basic_publish(conn.get(), status_channel, to_bytes(o.status_exchange),
                                        to_bytes(o.effective_status_routing_key()), /*mandatory=*/1, 0, &props,
                                        to_bytes(p.body));
      if (rc != AMQP_STATUS_OK) {
        result = core::Error{errc::publish_failed,
                             "cannot publish a status to " + conn.where() + ": " + amqp_error_string2(rc)};
        state_->fail(p.completion);
        continue;
      }
      state_->published.fetch_add(1);
      confirms_.published(std::move(p.completion));
    }
    return result;
  }

  core::Result<void> on_frame(const Connection& conn, const amqp_frame_t& frame) {
    if (frame.channel != status_channel) return {};
    const auto id = frame.frame_type == AMQP_FRAME_METHOD ? frame.payload.method.id : 0;
    if (id != AMQP_BASIC_ACK_METHOD && id != AMQP_BASIC_NACK_METHOD) {
      confirms_.on_frame(frame);
      return {};
    }
    const bool ack = id == AMQP_BASIC_ACK_METHOD;
    bool refused = false;
    const auto* m = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);  // nack: the same prefix
    const auto* n = static_cast<const amqp_basic_nack_t*>(frame.payload.method.decoded);
    const std::uint64_t tag = ack ? m->delivery_tag : n->delivery_tag;
    const bool multiple = ack ? m->multiple != 0 : n->multiple != 0;
    for (auto& settled : confirms_.on_confirm(tag, multiple, ack)) {
      switch (settled.outcome) {
        case PublishOutcome::confirmed:
          state_->confirmed.fetch_add(1);
          if (returning_) {
            returning_ = false;
            state_->loop.log(LogLevel::info, "statuses reach a queue again");
          }
          settled.value.complete(std::error_code{});
          break;
        case PublishOutcome::returned:
          state_->returned.fetch_add(1);
          if (!returning_) {  // once per episode: the dispatcher retries it every few seconds
            returning_ = true;
            const AmqpOptions& o = state_->loop.options();
            const std::string message =
                "the broker at " + conn.where() + " returned a status (" + confirms_.last_return() +
                "): no queue is bound to exchange '" + o.status_exchange + "' with routing key '" +
                o.effective_status_routing_key() + "'; statuses are retried and their jobs stay unacked until one is";
            state_->loop.set_error(message);
            state_->loop.log(LogLevel::error, message);
          }
          state_->fail(settled.value);
          break;
        case PublishOutcome::refused:
          refused = true;
          state_->fail(settled.value);
          break;
      }
    }
    // A quorum queue's leader gone with a node: a channel that came up during
    // the election may go on nacking every publish (seen with RabbitMQ 3.10)
    // while the queue has a new leader. A new connection, to the next node,
    // starts afresh; the dispatcher publishes the status again after its backoff.
    if (refused)
      return core::Error{errc::publish_failed,
                         "the broker at " + conn.where() + " refused (nacked) a status; reconnecting"};
    return {};
  }

  std::shared_ptr<SinkState> state_;
  PublishConfirms<core::PublishCompletion> confirms_;
  bool returning_ = false;  // statuses are being returned: logged once until one is confirmed
};

}  // namespace
}  // namespace detail

AmqpStatusSink::AmqpStatusSink(asio::any_io_executor executor, AmqpOptions options) : executor_(std::move(executor)) {
  detail::Brokers brokers = detail::resolve_or_throw(options);
  state_ = std::make_shared<detail::SinkState>(std::move(options), std::move(brokers));
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

void AmqpStatusSink::start_publish(std::span<const core::JobResult* const> results,
                                   std::vector<core::PublishCompletion> completions) {
  std::vector<detail::SinkState::Publish> publishes;
  publishes.reserve(results.size());
  for (std::size_t i = 0; i < results.size(); ++i)
    publishes.push_back({wire::job_response_json(*results[i]), results[i]->status_id, std::move(completions[i])});
  std::unique_lock lock(state_->mutex);
  if (state_->stopping || !state_->loop.connected()) {
    lock.unlock();
    for (auto& p : publishes) state_->fail(p.completion);
    return;
  }
  for (auto& p : publishes) state_->queue.push_back(std::move(p));
  lock.unlock();
  state_->loop.wake();
}

bool AmqpStatusSink::connected() const noexcept { return state_->loop.connected(); }

std::string AmqpStatusSink::endpoint() const { return state_->loop.where(); }

std::string AmqpStatusSink::last_error() const { return state_->loop.last_error(); }

AmqpSinkStats AmqpStatusSink::stats() const {
  AmqpSinkStats s;
  s.published = state_->published.load();
  s.confirmed = state_->confirmed.load();
  s.failed = state_->failed.load();
  s.returned = state_->returned.load();
  s.connects = state_->loop.connects();
  s.connected = state_->loop.connected();
  return s;
}

}  // namespace blacktree::amqp
