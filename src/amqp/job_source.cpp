// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/job_source.hpp>

#include "connection_loop.hpp"

#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>

#include <asio/error.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <utility>

namespace blacktree::amqp {
namespace detail {

namespace {
constexpr amqp_channel_t consume_channel = 1;
constexpr amqp_channel_t dead_letter_channel = 2;  // in confirm mode; kept apart from the consumer's
}  // namespace

// A message as read off the socket, before a receiver takes it.
struct Incoming {
  core::Job job;
  std::string invalid_reason;
  std::string body;
  std::string exchange;
  std::string routing_key;
  std::string content_type;
  std::uint64_t tag = 0;
  std::uint64_t generation = 0;
};

// What other threads ask of the connection thread.
struct Command {
  enum class Kind { ack, requeue, dead_letter } kind = Kind::ack;
  std::uint64_t generation = 0;
  std::uint64_t tag = 0;
  std::string body, exchange, routing_key, content_type, reason;
};

struct SourceState : std::enable_shared_from_this<SourceState> {
  using ReceiveHandler = core::CompletionHandler<void(std::error_code, AmqpDelivery)>;
  struct Receiver {
    std::uint64_t id;
    ReceiveHandler handler;
  };

  SourceState(asio::any_io_executor ex, AmqpOptions o, AmqpEndpoint e)
      : executor(std::move(ex)), prefetch(o.initial_prefetch), loop(std::move(o), std::move(e), "source") {}

  const asio::any_io_executor executor;

  mutable std::mutex mutex;
  std::deque<Command> commands;
  std::list<Receiver> receivers;
  std::uint64_t next_receiver = 1;
  std::deque<Incoming> ready;
  std::size_t prefetch = 0;
  bool consumer_cancelled = false;  // cancel_consumer(): sticky, whatever the prefetch says
  bool stopping = false;  // the thread is to exit
  bool closed = false;    // receives complete with source_closed

  std::atomic<std::uint64_t> delivered{0}, acked{0}, requeued{0}, dead_lettered{0};
  std::atomic<std::uint64_t> generation_counter{0};  // one per connection established

  ConnectionLoop loop;  // last: its thread may use everything above until stop() joins it

  AmqpDelivery make_delivery(Incoming in) {
    AmqpDelivery d;
    d.state_ = shared_from_this();
    d.job_ = std::move(in.job);
    d.invalid_reason_ = std::move(in.invalid_reason);
    d.body_ = std::move(in.body);
    d.exchange_ = std::move(in.exchange);
    d.routing_key_ = std::move(in.routing_key);
    d.content_type_ = std::move(in.content_type);
    d.delivery_tag_ = in.tag;
    d.generation_ = in.generation;
    return d;
  }

  void push(Command command) {
    {
      std::lock_guard lock(mutex);
      if (stopping) return;  // the connection closes: the broker takes everything back
      commands.push_back(std::move(command));
    }
    loop.wake();
  }

  // From the connection thread: to a waiting receiver, else into `ready`.
  void deliver(Incoming in) {
    std::unique_lock lock(mutex);
    if (receivers.empty()) {
      ready.push_back(std::move(in));
      return;
    }
    ReceiveHandler handler = std::move(receivers.front().handler);
    receivers.pop_front();
    lock.unlock();
    handler.complete(std::error_code{}, make_delivery(std::move(in)));
  }
};

namespace {

// Consumes on channel 1, dead-letters through channel 2 in confirm mode, and
// carries out what other threads asked for (acks, rejects, the prefetch).
class SourceWork final : public ConnectionWork {
 public:
  explicit SourceWork(std::shared_ptr<SourceState> state) : state_(std::move(state)) {}

  core::Result<void> on_connected(Connection& conn) override {
    conn_ = &conn;
    const AmqpOptions& o = state_->loop.options();
    if (o.declare) {
      if (auto declared = declare(o); !declared) return declared;
    }
    if (auto opened = conn.open_channel(dead_letter_channel); !opened)
      return opened.error().with_context("cannot open the dead-letter channel");
    if (auto confirming = conn.confirm_select(dead_letter_channel); !confirming) return confirming;
    generation_ = state_->generation_counter.fetch_add(1) + 1;
    consuming_ = false;
    qos_applied_ = 0;
    dead_letter_seq_ = 0;
    dead_letter_pending_.clear();
    return {};
  }

  core::Result<void> on_ready(Connection& conn) override {
    conn_ = &conn;
    if (auto handled = handle_commands(); !handled) return handled;
    if (auto synced = sync_consumer(); !synced) return synced;
    return read_available();
  }

  void on_disconnected() override {
    conn_ = nullptr;
    consuming_ = false;
    dead_letter_pending_.clear();
    // Buffered deliveries of the dead connection: the broker redelivers them.
    std::lock_guard lock(state_->mutex);
    state_->ready.clear();
  }

  // Commands meanwhile are for a dead connection.
  void on_woken_offline() override {
    std::lock_guard lock(state_->mutex);
    state_->commands.clear();
  }

  // Send the acks and rejects asked for before stop(), and wait (boundedly)
  // for the confirms of dead-letter copies, so that a graceful shutdown
  // settles everything it was told to.
  core::Result<void> on_stopping(Connection& conn) override {
    conn_ = &conn;
    // No new deliveries while the last acks and dead letters go out.
    if (consuming_) {
      amqp_basic_cancel(conn.get(), consume_channel, to_bytes(consumer_tag_));
      consuming_ = false;
    }
    Waker& waker = state_->loop.waker();
    auto settled = handle_commands();
    const auto deadline = std::chrono::steady_clock::now() + state_->loop.options().connect_timeout;
    while (settled && !dead_letter_pending_.empty() && std::chrono::steady_clock::now() < deadline) {
      settled = read_available();
      if (!settled || dead_letter_pending_.empty() || conn.has_buffered()) continue;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (wait(conn.fd(), waker, std::max(left, std::chrono::milliseconds(1))).woken) waker.drain();
    }
    return settled;
  }

 private:
  core::Result<void> declare(const AmqpOptions& o) {
    if (auto declared = conn_->declare_queue(consume_channel, o.execute_queue); !declared) return declared;
    if (!o.dead_letter_exchange.empty()) {
      if (auto declared = conn_->declare_exchange(consume_channel, o.dead_letter_exchange, o.dead_letter_exchange_type);
          !declared)
        return declared;
    }
    if (o.dead_letter_queue.empty()) return {};
    if (auto declared = conn_->declare_queue(consume_channel, o.dead_letter_queue); !declared) return declared;
    if (o.dead_letter_exchange.empty()) return {};
    const std::string key = o.dead_letter_exchange_type == "topic" ? "#" : o.execute_queue;
    return conn_->bind_queue(consume_channel, o.dead_letter_queue, o.dead_letter_exchange, key);
  }

  core::Result<void> handle_commands() {
    std::deque<Command> commands;
    {
      std::lock_guard lock(state_->mutex);
      commands.swap(state_->commands);
    }
    for (auto& c : commands) {
      if (c.generation != generation_) continue;  // its connection is gone; the broker redelivers it
      int rc = AMQP_STATUS_OK;
      switch (c.kind) {
        case Command::Kind::ack:
          rc = amqp_basic_ack(conn_->get(), consume_channel, c.tag, 0);
          state_->acked.fetch_add(1);
          break;
        case Command::Kind::requeue:
          rc = amqp_basic_reject(conn_->get(), consume_channel, c.tag, 1);
          state_->requeued.fetch_add(1);
          break;
        case Command::Kind::dead_letter:
          rc = publish_dead_letter(c);
          break;
      }
      if (rc != AMQP_STATUS_OK) return conn_->lost(rc);
    }
    return {};
  }

  int publish_dead_letter(const Command& c) {
    const AmqpOptions& o = state_->loop.options();
    amqp_table_entry_t headers[3]{};
    auto set = [&](int i, const char* key, const std::string& value) {
      headers[i].key = amqp_cstring_bytes(key);
      headers[i].value.kind = AMQP_FIELD_KIND_UTF8;
      headers[i].value.value.bytes = to_bytes(value);
    };
    set(0, "x-blacktree-reason", c.reason);
    set(1, "x-original-exchange", c.exchange);
    set(2, "x-original-routing-key", c.routing_key);
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.delivery_mode = 2;
    props.headers = amqp_table_t{3, headers};
    if (!c.content_type.empty()) {
      props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
      props.content_type = to_bytes(c.content_type);
    }
    // Through a named exchange the original routing key travels on; through
    // the default exchange the key must name the dead-letter queue.
    const std::string& key = o.dead_letter_exchange.empty() ? o.dead_letter_queue : c.routing_key;
    const int rc = amqp_basic_publish(conn_->get(), dead_letter_channel, to_bytes(o.dead_letter_exchange),
                                      to_bytes(key), 0, 0, &props, to_bytes(c.body));
    if (rc == AMQP_STATUS_OK) dead_letter_pending_.emplace(++dead_letter_seq_, c.tag);
    return rc;
  }

  // The broker confirmed (or refused) dead-letter publishes up to `seq`.
  core::Result<void> on_dead_letter_confirm(std::uint64_t seq, bool multiple, bool ok) {
    auto end = multiple ? dead_letter_pending_.upper_bound(seq) : dead_letter_pending_.find(seq);
    auto begin = multiple ? dead_letter_pending_.begin() : end;
    if (!multiple) {
      if (end == dead_letter_pending_.end()) return {};
      ++end;
    }
    for (auto it = begin; it != end; ++it) {
      // Confirmed: the copy is safe, drop the original. Refused: give the original back.
      const int rc = ok ? amqp_basic_ack(conn_->get(), consume_channel, it->second, 0)
                        : amqp_basic_reject(conn_->get(), consume_channel, it->second, 1);
      (ok ? state_->dead_lettered : state_->requeued).fetch_add(1);
      if (rc != AMQP_STATUS_OK)
        return conn_->lost(std::string("cannot settle a dead-lettered job: ") + amqp_error_string2(rc));
    }
    dead_letter_pending_.erase(begin, end);
    return {};
  }

  // Makes the broker's consumer match the prefetch: AMQP's 0 is "unlimited",
  // ours is "nothing", so 0 means no consumer at all.
  core::Result<void> sync_consumer() {
    std::size_t wanted;
    {
      std::lock_guard lock(state_->mutex);
      wanted = state_->consumer_cancelled ? 0 : std::min<std::size_t>(state_->prefetch, 65535);
    }
    amqp_connection_state_t c = conn_->get();
    const std::string& queue = state_->loop.options().execute_queue;
    if (wanted > 0 && wanted != qos_applied_) {
      // global: a channel-wide limit, which RabbitMQ applies at once to the
      // running consumer (a per-consumer one only to consumers started later).
      amqp_basic_qos(c, consume_channel, 0, static_cast<std::uint16_t>(wanted), 1);
      if (auto set = check_reply(amqp_get_rpc_reply(c), errc::consume_failed, "basic.qos failed"); !set) return set;
      qos_applied_ = wanted;
    }
    if (wanted > 0 && !consuming_) {
      amqp_basic_consume_ok_t* ok =
          amqp_basic_consume(c, consume_channel, to_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
      const std::string context = "cannot consume from queue '" + queue + "'";
      if (auto started = check_reply(amqp_get_rpc_reply(c), errc::consume_failed, context); !started) return started;
      if (!ok) return core::Error{errc::consume_failed, context};
      consumer_tag_.assign(to_view(ok->consumer_tag));
      consuming_ = true;
    } else if (wanted == 0 && consuming_) {
      amqp_basic_cancel(c, consume_channel, to_bytes(consumer_tag_));
      if (auto cancelled = check_reply(amqp_get_rpc_reply(c), errc::consume_failed, "basic.cancel failed"); !cancelled)
        return cancelled;
      consuming_ = false;
      // Buffered and never handed out: straight back to the queue.
      std::deque<Incoming> ready;
      {
        std::lock_guard lock(state_->mutex);
        ready.swap(state_->ready);
      }
      for (const auto& in : ready) {
        if (int rc = amqp_basic_reject(c, consume_channel, in.tag, 1); rc != AMQP_STATUS_OK) return conn_->lost(rc);
        state_->requeued.fetch_add(1);
      }
    }
    return {};
  }

  // Reads whatever has arrived, without blocking on the socket.
  core::Result<void> read_available() {
    amqp_connection_state_t c = conn_->get();
    for (int i = 0; i < 256; ++i) {  // bounded, so commands get their turn under a flood
      amqp_maybe_release_buffers(c);
      timeval zero{0, 0};
      amqp_envelope_t envelope{};
      const amqp_rpc_reply_t reply = amqp_consume_message(c, &envelope, &zero, 0);
      if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
        on_delivery(envelope);
        amqp_destroy_envelope(&envelope);
        continue;
      }
      if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_TIMEOUT)
        return {};
      if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
        amqp_frame_t frame{};
        const int rc = amqp_simple_wait_frame_noblock(c, &frame, &zero);
        if (rc == AMQP_STATUS_TIMEOUT) return {};
        if (rc != AMQP_STATUS_OK) return conn_->lost(rc);
        if (auto handled = on_frame(frame); !handled) return handled;
        continue;
      }
      return conn_->lost(describe_reply(reply));
    }
    return {};
  }

  core::Result<void> on_frame(const amqp_frame_t& frame) {
    if (frame.frame_type != AMQP_FRAME_METHOD) return {};
    if (auto closed = closed_by_broker(*conn_, frame); !closed) return closed;
    switch (frame.payload.method.id) {
      case AMQP_BASIC_ACK_METHOD: {
        const auto* m = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
        return on_dead_letter_confirm(m->delivery_tag, m->multiple != 0, true);
      }
      case AMQP_BASIC_NACK_METHOD: {
        const auto* m = static_cast<const amqp_basic_nack_t*>(frame.payload.method.decoded);
        return on_dead_letter_confirm(m->delivery_tag, m->multiple != 0, false);
      }
      case AMQP_BASIC_CANCEL_METHOD:
        // The queue was deleted or failed over: start again, declaring it anew.
        return core::Error{errc::consume_failed, "the broker at " + conn_->where() + " cancelled the consumer of '" +
                                                     state_->loop.options().execute_queue + "'"};
      default:
        return {};
    }
  }

  void on_delivery(const amqp_envelope_t& envelope) {
    state_->delivered.fetch_add(1);
    if (!consuming_) {
      // Arrived while the consumer was being cancelled (prefetch 0): not ours to hold.
      amqp_basic_reject(conn_->get(), consume_channel, envelope.delivery_tag, 1);
      state_->requeued.fetch_add(1);
      return;
    }
    Incoming in;
    in.body.assign(to_view(envelope.message.body));
    wire::ParsedJob parsed = wire::parse_job_request(in.body);
    in.job = std::move(parsed.job);
    in.job.redelivered = envelope.redelivered != 0;
    if (!parsed.valid) in.invalid_reason = parsed.valid.error().message();
    in.exchange.assign(to_view(envelope.exchange));
    in.routing_key.assign(to_view(envelope.routing_key));
    if (envelope.message.properties._flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
      in.content_type.assign(to_view(envelope.message.properties.content_type));
    in.tag = envelope.delivery_tag;
    in.generation = generation_;
    state_->deliver(std::move(in));
  }

  std::shared_ptr<SourceState> state_;
  Connection* conn_ = nullptr;  // the loop's, between on_connected and on_disconnected
  std::uint64_t generation_ = 0;
  bool consuming_ = false;
  std::size_t qos_applied_ = 0;
  std::string consumer_tag_;
  std::uint64_t dead_letter_seq_ = 0;
  std::map<std::uint64_t, std::uint64_t> dead_letter_pending_;  // publish seq -> original delivery tag
};

}  // namespace
}  // namespace detail

// --- AmqpDelivery --------------------------------------------------------------

AmqpDelivery& AmqpDelivery::operator=(AmqpDelivery&& other) noexcept {
  if (this != &other) {
    hand_back();
    state_ = std::move(other.state_);
    job_ = std::move(other.job_);
    invalid_reason_ = std::move(other.invalid_reason_);
    body_ = std::move(other.body_);
    exchange_ = std::move(other.exchange_);
    routing_key_ = std::move(other.routing_key_);
    content_type_ = std::move(other.content_type_);
    delivery_tag_ = other.delivery_tag_;
    generation_ = other.generation_;
  }
  return *this;
}

AmqpDelivery::~AmqpDelivery() { hand_back(); }

void AmqpDelivery::hand_back() noexcept {
  if (!state_) return;
  auto state = std::move(state_);
  try {
    detail::Command command;
    command.kind = detail::Command::Kind::requeue;
    command.generation = generation_;
    command.tag = delivery_tag_;
    state->push(std::move(command));
  } catch (...) {
    // Out of memory: the delivery stays unacked until its connection closes,
    // and the broker redelivers it then.
  }
}

// --- AmqpJobSource -------------------------------------------------------------

AmqpJobSource::AmqpJobSource(asio::any_io_executor executor, AmqpOptions options) : executor_(executor) {
  AmqpEndpoint endpoint = detail::resolve_or_throw(options);
  endpoint_description_ = endpoint.describe();
  state_ = std::make_shared<detail::SourceState>(std::move(executor), std::move(options), std::move(endpoint));
  state_->loop.start(std::make_unique<detail::SourceWork>(state_));
}

AmqpJobSource::~AmqpJobSource() { stop(); }

void AmqpJobSource::stop() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;  // what was asked before still goes out; nothing after
  }
  state_->loop.stop();
  std::list<detail::SourceState::Receiver> receivers;
  {
    std::lock_guard lock(state_->mutex);
    state_->closed = true;
    state_->ready.clear();
    receivers.swap(state_->receivers);
  }
  for (auto& r : receivers) r.handler.complete(core::errc::source_closed, AmqpDelivery{});
}

std::uint64_t AmqpJobSource::start_receive(ReceiveHandler handler) {
  std::unique_lock lock(state_->mutex);
  if (state_->closed) {
    lock.unlock();
    handler.complete(core::errc::source_closed, AmqpDelivery{});
    return 0;
  }
  if (!state_->ready.empty()) {
    detail::Incoming in = std::move(state_->ready.front());
    state_->ready.pop_front();
    lock.unlock();
    handler.complete(std::error_code{}, state_->make_delivery(std::move(in)));
    return 0;
  }
  const std::uint64_t id = state_->next_receiver++;
  state_->receivers.push_back({id, std::move(handler)});
  return id;
}

void AmqpJobSource::cancel_receive(const std::weak_ptr<detail::SourceState>& weak, std::uint64_t id) {
  auto state = weak.lock();
  if (!state) return;
  ReceiveHandler handler;
  {
    std::lock_guard lock(state->mutex);
    auto it = std::find_if(state->receivers.begin(), state->receivers.end(),
                           [id](const detail::SourceState::Receiver& r) { return r.id == id; });
    if (it == state->receivers.end()) return;  // already completed
    handler = std::move(it->handler);
    state->receivers.erase(it);
  }
  handler.complete(asio::error::operation_aborted, AmqpDelivery{});
}

void AmqpJobSource::ack(AmqpDelivery& delivery) {
  if (!delivery.state_) return;
  auto state = std::move(delivery.state_);
  detail::Command command;
  command.kind = detail::Command::Kind::ack;
  command.generation = delivery.generation_;
  command.tag = delivery.delivery_tag_;
  state->push(std::move(command));
}

void AmqpJobSource::reject(AmqpDelivery& delivery, core::Disposition disposition, std::string_view reason) {
  if (!delivery.state_) return;
  auto state = std::move(delivery.state_);
  detail::Command command;
  command.generation = delivery.generation_;
  command.tag = delivery.delivery_tag_;
  if (disposition == core::Disposition::requeue) {
    command.kind = detail::Command::Kind::requeue;
  } else {
    command.kind = detail::Command::Kind::dead_letter;
    command.body = delivery.body_;
    command.exchange = delivery.exchange_;
    command.routing_key = delivery.routing_key_;
    command.content_type = delivery.content_type_;
    command.reason = std::string(reason);
  }
  state->push(std::move(command));
}

void AmqpJobSource::set_prefetch(std::size_t n) {
  {
    std::lock_guard lock(state_->mutex);
    if (state_->prefetch == n) return;
    state_->prefetch = n;
  }
  state_->loop.wake();
}

void AmqpJobSource::cancel_consumer() {
  {
    std::lock_guard lock(state_->mutex);
    state_->consumer_cancelled = true;
  }
  state_->loop.wake();
}

bool AmqpJobSource::connected() const noexcept { return state_->loop.connected(); }

std::string AmqpJobSource::last_error() const { return state_->loop.last_error(); }

AmqpSourceStats AmqpJobSource::stats() const {
  AmqpSourceStats s;
  s.delivered = state_->delivered.load();
  s.acked = state_->acked.load();
  s.requeued = state_->requeued.load();
  s.dead_lettered = state_->dead_lettered.load();
  s.connects = state_->loop.connects();
  s.connected = state_->loop.connected();
  std::lock_guard lock(state_->mutex);
  s.prefetch = state_->prefetch;
  return s;
}

}  // namespace blacktree::amqp
