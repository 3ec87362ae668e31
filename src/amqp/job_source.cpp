// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/job_source.hpp>

#include "confirms.hpp"
#include "connection_loop.hpp"

#include <blacktree/core/detail/recent_ids.hpp>

#include <blacktree/core/error.hpp>
#include <blacktree/wire/wire.hpp>

#include <asio/error.hpp>

#include <algorithm>
#include <atomic>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <unordered_set>
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
  using BatchHandler = core::CompletionHandler<void(std::error_code, std::vector<AmqpDelivery>)>;
  // A pending async_receive (`one`) or async_receive_some (`some`, up to `max`).
  struct Receiver {
    std::uint64_t id = 0;
    ReceiveHandler one;
    BatchHandler some;
    std::size_t max = 1;

    void fail(std::error_code ec) {
      if (one)
        one.complete(ec, AmqpDelivery{});
      else
        some.complete(ec, {});
    }
  };

  SourceState(asio::any_io_executor ex, AmqpOptions o, Brokers e)
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

  std::atomic<std::uint64_t> delivered{0}, acked{0}, ack_frames{0}, requeued{0}, dead_lettered{0},
      dead_letters_returned{0}, too_large{0};
  std::atomic<std::uint64_t> generation_counter{0};  // one per connection established
  // Job ids of deliveries this source gave back to the broker without ever
  // handing them out (requeued while buffered or arriving for a cancelled
  // consumer, or buffered when their connection was lost). Their redelivery
  // is no news to anyone: it is not marked redelivered, so the dispatcher
  // does not wait for a worker that might carry it. Under `mutex`.
  core::detail::RecentIds<bool> never_handed_out{4096, std::chrono::minutes(10)};

  void note_never_handed_out(const std::string& job_id) {  // with `mutex` held
    if (!job_id.empty()) never_handed_out.put(job_id, true);
  }

  // Deliveries handed out and not settled yet, by connection (generation)
  // and tag: their job ids. One whose connection was lost is back with the
  // broker, which may deliver it to another consumer (another orchestrator)
  // while its job goes on here: see lost_deliveries(). Under `mutex`.
  std::map<std::uint64_t, std::unordered_map<std::uint64_t, std::string>> handed_out;
  std::uint64_t live_generation = 0;  // the connection up now; 0: none. Under `mutex`.
  // Deliveries of lost connections acked since (their statuses are out), oldest first. Under `mutex`.
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>> lost_acked;

  void note_handed_out(const Incoming& in) {  // with `mutex` held
    if (!in.job.id.empty()) handed_out[in.generation][in.tag] = in.job.id;
  }

  void note_settled(std::uint64_t generation, std::uint64_t tag, bool was_acked) {
    std::lock_guard lock(mutex);
    auto connection = handed_out.find(generation);
    if (connection == handed_out.end()) return;
    auto it = connection->second.find(tag);
    if (it == connection->second.end()) return;
    if (was_acked && generation != live_generation) {
      lost_acked.emplace_back(std::chrono::steady_clock::now(), it->second);
      if (lost_acked.size() > 4096) lost_acked.pop_front();  // bounded when nobody asks (no peers)
    }
    connection->second.erase(it);
    if (connection->second.empty()) handed_out.erase(connection);
  }

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

  // All in one go: the connection thread sees them together (acks of a run
  // of deliveries then go out as one multiple ack).
  void push(std::vector<Command> batch) {
    if (batch.empty()) return;
    {
      std::lock_guard lock(mutex);
      if (stopping) return;
      for (auto& command : batch) commands.push_back(std::move(command));
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
    Receiver receiver = std::move(receivers.front());
    receivers.pop_front();
    ready.push_back(std::move(in));
    hand_out(std::move(receiver), lock);
  }

  // Completes `receiver` with what `ready` holds (not empty); unlocks first.
  void hand_out(Receiver receiver, std::unique_lock<std::mutex>& lock) {
    std::vector<Incoming> taken = take_ready(receiver.one ? 1 : std::max<std::size_t>(receiver.max, 1));
    lock.unlock();
    if (receiver.one) {
      receiver.one.complete(std::error_code{}, make_delivery(std::move(taken.front())));
      return;
    }
    receiver.some.complete(std::error_code{}, make_deliveries(taken));
  }

  // Up to `max` of `ready`, oldest first. Under `mutex`.
  std::vector<Incoming> take_ready(std::size_t max) {
    std::vector<Incoming> taken;
    const std::size_t n = std::min(max, ready.size());
    taken.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      note_handed_out(ready.front());
      taken.push_back(std::move(ready.front()));
      ready.pop_front();
    }
    return taken;
  }

  std::vector<AmqpDelivery> make_deliveries(std::vector<Incoming>& taken) {
    std::vector<AmqpDelivery> batch;
    batch.reserve(taken.size());
    for (auto& in : taken) batch.push_back(make_delivery(std::move(in)));
    return batch;
  }
};

namespace {

// The consume channel's delivery tags from the lowest one not settled yet:
// every tag below it is acked or rejected (its frame sent), so a multiple
// ack up to a tag below it settles nothing it should not. The broker numbers
// a channel's deliveries 1, 2, 3...; an unexpected gap (or a delivery
// never settled) only stops the lowest from moving, which makes acks single
// again, never wrong; past `limit` tags behind it, it stops following them
// (a byte each), with the same effect.
class UnsettledTags {
 public:
  void reset() {
    lowest_ = 1;
    settled_.clear();
  }
  void delivered(std::uint64_t tag) {
    constexpr std::size_t limit = std::size_t{1} << 20;
    while (tag >= lowest_ + settled_.size() && settled_.size() < limit) settled_.push_back(false);
  }
  void settled(std::uint64_t tag) {
    if (tag < lowest_ || tag - lowest_ >= settled_.size()) return;
    settled_[static_cast<std::size_t>(tag - lowest_)] = true;
    while (!settled_.empty() && settled_.front()) {
      settled_.pop_front();
      ++lowest_;
    }
  }
  std::uint64_t lowest() const noexcept { return lowest_; }

 private:
  std::uint64_t lowest_ = 1;
  std::deque<bool> settled_;  // tags lowest_, lowest_ + 1, ...
};

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
    forget_connection();
    std::lock_guard lock(state_->mutex);
    state_->live_generation = generation_;
    return {};
  }

  core::Result<void> on_ready(Connection& conn) override {
    conn_ = &conn;
    if (auto handled = handle_commands(); !handled) return handled;
    if (auto retried = retry_dead_letters(); !retried) return retried;
    if (auto synced = sync_consumer(); !synced) return synced;
    return read_available();
  }

  void on_disconnected() override {
    conn_ = nullptr;
    // Unsettled deliveries of the dead connection, buffered ones and those
    // whose dead letter was unconfirmed: the broker redelivers them.
    forget_connection();
    std::lock_guard lock(state_->mutex);
    state_->live_generation = 0;
    for (const auto& in : state_->ready) state_->note_never_handed_out(in.job.id);
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
    for (const Consumer& c : consumers_) amqp_basic_cancel(conn.get(), consume_channel, to_bytes(c.tag));
    consumers_.clear();
    Waker& waker = state_->loop.waker();
    auto settled = handle_commands();
    const auto deadline = std::chrono::steady_clock::now() + state_->loop.options().connect_timeout;
    while (settled && !dead_letters_.empty() && std::chrono::steady_clock::now() < deadline) {
      settled = read_available();
      if (!settled || dead_letters_.empty() || conn.has_buffered()) continue;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (wait(conn.fd(), waker, std::max(left, std::chrono::milliseconds(1))).woken) waker.drain();
    }
    return settled;
  }

  std::chrono::steady_clock::time_point wake_at() const override { return std::min(retry_at_, shrink_at_); }

 private:
  // A message being read off the consume channel: basic.deliver, its content
  // header, its body frames.
  struct Inbound {
    bool active = false;
    Incoming in;
    std::string consumer_tag;
    std::uint64_t body_size = 0;
    std::uint64_t received = 0;
    bool too_large = false;  // the body is dropped frame by frame, never held
  };

  void forget_connection() {
    consumers_.clear();
    held_by_earlier_ = 0;
    shrink_at_ = std::chrono::steady_clock::time_point::max();
    unsettled_.reset();
    inbound_ = Inbound{};
    dead_letters_.reset();
    retries_.clear();
    retry_at_ = std::chrono::steady_clock::time_point::max();
  }

  // Declares `name` with the options' queue type; says so when it exists as another.
  core::Result<void> declare_queue(const AmqpOptions& o, const std::string& name) {
    std::string note;
    auto declared = conn_->declare_queue(consume_channel, name, o.queue_type, &note);
    if (declared && !note.empty()) state_->loop.log(LogLevel::warning, note);
    return declared;
  }

  core::Result<void> declare(const AmqpOptions& o) {
    if (auto declared = declare_queue(o, o.execute_queue); !declared) return declared;
    if (!o.dead_letter_exchange.empty()) {
      if (auto declared = conn_->declare_exchange(consume_channel, o.dead_letter_exchange, o.dead_letter_exchange_type);
          !declared)
        return declared;
    }
    if (o.dead_letter_queue.empty()) return {};
    if (auto declared = declare_queue(o, o.dead_letter_queue); !declared) return declared;
    if (o.dead_letter_exchange.empty()) return {};
    const std::string key = o.dead_letter_exchange_type == "topic" ? "#" : o.execute_queue;
    return conn_->bind_queue(consume_channel, o.dead_letter_queue, o.dead_letter_exchange, key);
  }

  // With log_deliveries: what became of a delivery of this connection.
  void log_delivery(std::string_view what, std::uint64_t tag) {
    if (state_->loop.options().log_deliveries) log_delivery(what, std::to_string(tag));
  }
  void log_delivery(std::string_view what, std::string_view detail) {
    state_->loop.log(LogLevel::debug,
                     std::string(what) + " on connection " + std::to_string(generation_) + ": " + std::string(detail));
  }

  // A delivery of this connection is settled (acked or rejected): it no
  // longer counts against the prefetch.
  void settled(std::uint64_t tag) {
    const bool live = std::any_of(consumers_.begin(), consumers_.end(),
                                  [tag](Consumer& c) { return c.unsettled.erase(tag) != 0; });
    if (!live && held_by_earlier_ > 0) --held_by_earlier_;
    unsettled_.settled(tag);
  }

  core::Result<void> handle_commands() {
    std::deque<Command> commands;
    {
      std::lock_guard lock(state_->mutex);
      commands.swap(state_->commands);
    }
    std::vector<std::uint64_t> acks;  // sent last, as few frames as they allow
    const CorkedSends corked(*conn_, commands.size());
    for (auto& c : commands) {
      if (c.generation != generation_) continue;  // its connection is gone; the broker redelivers it
      int rc = AMQP_STATUS_OK;
      switch (c.kind) {
        case Command::Kind::ack:
          acks.push_back(c.tag);
          settled(c.tag);
          break;
        case Command::Kind::requeue:
          rc = amqp_basic_reject(conn_->get(), consume_channel, c.tag, 1);
          state_->requeued.fetch_add(1);
          settled(c.tag);
          log_delivery("requeued (asked)", c.tag);
          break;
        case Command::Kind::dead_letter:
          rc = publish_dead_letter(std::move(c));
          break;
      }
      if (rc != AMQP_STATUS_OK) return conn_->lost(rc);
    }
    return send_acks(acks);
  }

  // One multiple ack for those below the lowest unsettled tag (everything
  // below it is settled: these now, the rest before), a single ack for each
  // of the others.
  core::Result<void> send_acks(const std::vector<std::uint64_t>& tags) {
    const std::uint64_t lowest = unsettled_.lowest();
    std::uint64_t run_end = 0;
    std::size_t in_run = 0;
    for (const std::uint64_t tag : tags)
      if (tag < lowest) {
        run_end = std::max(run_end, tag);
        ++in_run;
      }
    auto ack = [&](std::uint64_t tag, bool multiple) {
      state_->ack_frames.fetch_add(1);
      return amqp_basic_ack(conn_->get(), consume_channel, tag, multiple ? 1 : 0);
    };
    if (in_run > 0)
      if (const int rc = ack(run_end, in_run > 1); rc != AMQP_STATUS_OK) return conn_->lost(rc);
    for (const std::uint64_t tag : tags)
      if (tag >= lowest)
        if (const int rc = ack(tag, false); rc != AMQP_STATUS_OK) return conn_->lost(rc);
    state_->acked.fetch_add(tags.size());
    if (state_->loop.options().log_deliveries && !tags.empty()) {
      std::string acked;
      if (in_run > 0)
        acked = "up to " + std::to_string(run_end) + (in_run > 1 ? " (multiple, " + std::to_string(in_run) + ")" : "");
      for (const std::uint64_t tag : tags)
        if (tag >= lowest) acked += (acked.empty() ? "" : " ") + std::to_string(tag);
      log_delivery("acked", acked + "; lowest unsettled " + std::to_string(lowest));
    }
    return {};
  }

  int publish_dead_letter(Command c) {
    const AmqpOptions& o = state_->loop.options();
    amqp_table_entry_t headers[4]{};
    auto set = [&](int i, const char* key, const std::string& value) {
      headers[i].key = amqp_cstring_bytes(key);
      headers[i].value.kind = AMQP_FIELD_KIND_UTF8;
      headers[i].value.value.bytes = to_bytes(value);
    };
    set(0, "x-blacktree-reason", c.reason);
    set(1, "x-original-exchange", c.exchange);
    set(2, "x-original-routing-key", c.routing_key);
    headers[3] = publish_seq_entry(dead_letters_.next_seq());
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.delivery_mode = 2;
    props.headers = amqp_table_t{4, headers};
    if (!c.content_type.empty()) {
      props._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
      props.content_type = to_bytes(c.content_type);
    }
    // Through a named exchange the original routing key travels on; through
    // the default exchange the key must name the dead-letter queue.
    const std::string& key = o.dead_letter_exchange.empty() ? o.dead_letter_queue : c.routing_key;
    // mandatory: a dead letter no queue takes comes back instead of vanishing
    // while its original is acked.
    const int rc = amqp_basic_publish(conn_->get(), dead_letter_channel, to_bytes(o.dead_letter_exchange),
                                      to_bytes(key), /*mandatory=*/1, 0, &props, to_bytes(c.body));
    if (rc == AMQP_STATUS_OK) dead_letters_.published(std::move(c));
    return rc;
  }

  // The broker confirmed, returned or refused dead-letter publishes up to `seq`.
  core::Result<void> on_dead_letter_confirm(std::uint64_t seq, bool multiple, bool ack) {
    for (auto& [command, outcome] : dead_letters_.on_confirm(seq, multiple, ack)) {
      if (outcome == PublishOutcome::confirmed) {
        // The copy is safe: drop the original.
        if (const int rc = amqp_basic_ack(conn_->get(), consume_channel, command.tag, 0); rc != AMQP_STATUS_OK)
          return conn_->lost(std::string("cannot settle a dead-lettered job: ") + amqp_error_string2(rc));
        settled(command.tag);
        log_delivery("acked (its dead letter is confirmed)", command.tag);
        state_->dead_lettered.fetch_add(1);
        retry_backoff_.reset();
        if (returning_) {
          returning_ = false;
          state_->loop.log(LogLevel::info, "dead letters reach a queue again");
        }
        continue;
      }
      // Returned or refused: the original stays unacked (requeueing it would
      // only have it delivered, found invalid and dead-lettered again at
      // once) and the copy is published again after a backoff.
      if (outcome == PublishOutcome::returned) state_->dead_letters_returned.fetch_add(1);
      if (!returning_) {  // once per episode, not per retry
        returning_ = true;
        const AmqpOptions& o = state_->loop.options();
        const std::string message =
            outcome == PublishOutcome::returned
                ? "the broker at " + conn_->where() + " returned a dead letter (" + dead_letters_.last_return() +
                      "): no queue is bound to exchange '" + o.dead_letter_exchange +
                      "'; invalid jobs stay unacked and are dead-lettered again until one is"
                : "the broker at " + conn_->where() + " refused (nacked) a dead letter; it is published again";
        state_->loop.set_error(message);
        state_->loop.log(LogLevel::error, message);
      }
      retries_.push_back(std::move(command));
      if (retry_at_ == std::chrono::steady_clock::time_point::max())
        retry_at_ = std::chrono::steady_clock::now() + retry_backoff_.next();
    }
    return {};
  }

  core::Result<void> retry_dead_letters() {
    if (retries_.empty() || std::chrono::steady_clock::now() < retry_at_) return {};
    retry_at_ = std::chrono::steady_clock::time_point::max();
    std::deque<Command> due;
    due.swap(retries_);
    for (auto& c : due) {
      if (const int rc = publish_dead_letter(std::move(c)); rc != AMQP_STATUS_OK) return conn_->lost(rc);
    }
    return {};
  }

  // Makes the broker's consumers match the prefetch. AMQP's 0 is "unlimited",
  // ours is "nothing", so 0 means no consumer at all. The limit is per
  // consumer (basic.qos global=false): quorum queues refuse a global one.
  // RabbitMQ applies a per-consumer limit only to consumers started after
  // it, so the channel's consumers share the prefetch, each with its own
  // limit, and a cancelled consumer's unsettled deliveries count against it
  // until they settle (held_by_earlier_).
  //
  // A consumer that holds unsettled deliveries is not cancelled for a new
  // prefetch at once: RabbitMQ 3.10 can lose a quorum queue's deliveries
  // held by a cancelled consumer when its node restarts (operations.md,
  // "Known broker issue"), and the dispatcher's prefetch moves with every
  // duplicate it attaches. So a higher prefetch adds a consumer for the
  // difference; a lower one cancels consumers that hold nothing, and only a
  // surplus that lasts consumer_shrink_delay cancels one that holds
  // deliveries (until then the source may buffer a few more than asked).
  core::Result<void> sync_consumer() {
    std::size_t wanted;
    {
      std::lock_guard lock(state_->mutex);
      wanted = state_->consumer_cancelled ? 0 : std::min<std::size_t>(state_->prefetch, 65535);
    }
    if (wanted == 0) {
      shrink_at_ = std::chrono::steady_clock::time_point::max();
      if (consumers_.empty()) return {};
      while (!consumers_.empty()) {
        if (auto cancelled = cancel_consumer(consumers_.size() - 1); !cancelled) return cancelled;
      }
      return requeue_buffered();
    }
    if (covered() > wanted) {
      if (auto shrunk = shrink_to(wanted); !shrunk) return shrunk;
    } else {
      shrink_at_ = std::chrono::steady_clock::time_point::max();
    }
    if (covered() >= wanted) return {};  // nothing more to take until earlier deliveries settle
    return add_consumer(wanted - covered());
  }

  // What the broker may have out to this connection's consume channel at once.
  std::size_t covered() const {
    std::size_t n = held_by_earlier_;
    for (const Consumer& c : consumers_) n += c.limit;
    return n;
  }

  // Cancels consumers that hold nothing while more than `wanted` can come;
  // once the surplus has lasted consumer_shrink_delay, also those that hold
  // deliveries, fewest first, until no more than `wanted` can come.
  core::Result<void> shrink_to(std::size_t wanted) {
    for (std::size_t i = consumers_.size(); i-- > 0 && covered() > wanted;) {
      if (consumers_[i].unsettled.empty()) {  // the difference, if any, goes to a new consumer
        if (auto cancelled = cancel_consumer(i); !cancelled) return cancelled;
      }
    }
    if (covered() <= wanted) {
      shrink_at_ = std::chrono::steady_clock::time_point::max();
      return {};
    }
    const auto now = std::chrono::steady_clock::now();
    if (shrink_at_ == std::chrono::steady_clock::time_point::max()) {
      shrink_at_ = now + state_->loop.options().consumer_shrink_delay;
      return {};
    }
    if (now < shrink_at_) return {};
    shrink_at_ = std::chrono::steady_clock::time_point::max();
    std::sort(consumers_.begin(), consumers_.end(),
              [](const Consumer& a, const Consumer& b) { return a.unsettled.size() > b.unsettled.size(); });
    while (!consumers_.empty() && covered() > wanted) {
      if (auto cancelled = cancel_consumer(consumers_.size() - 1); !cancelled) return cancelled;
    }
    return {};
  }

  core::Result<void> add_consumer(std::size_t limit) {
    amqp_connection_state_t c = conn_->get();
    const std::string& queue = state_->loop.options().execute_queue;
    amqp_basic_qos(c, consume_channel, 0, static_cast<std::uint16_t>(limit), /*global=*/0);
    if (auto set = check_reply(amqp_get_rpc_reply(c), errc::consume_failed, "basic.qos failed"); !set) return set;
    amqp_basic_consume_ok_t* ok =
        amqp_basic_consume(c, consume_channel, to_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    const std::string context = "cannot consume from queue '" + queue + "'";
    if (auto started = check_reply(amqp_get_rpc_reply(c), errc::consume_failed, context); !started) return started;
    if (!ok) return core::Error{errc::consume_failed, context};
    consumers_.push_back(Consumer{std::string(to_view(ok->consumer_tag)), limit, {}});
    return {};
  }

  // Cancels consumers_[i]; what it holds counts as held_by_earlier_ until settled.
  core::Result<void> cancel_consumer(std::size_t i) {
    amqp_basic_cancel(conn_->get(), consume_channel, to_bytes(consumers_[i].tag));
    if (auto cancelled = check_reply(amqp_get_rpc_reply(conn_->get()), errc::consume_failed, "basic.cancel failed");
        !cancelled)
      return cancelled;
    held_by_earlier_ += consumers_[i].unsettled.size();
    consumers_.erase(consumers_.begin() + static_cast<std::ptrdiff_t>(i));
    return {};
  }

  // Buffered and never handed out: straight back to the queue.
  core::Result<void> requeue_buffered() {
    std::deque<Incoming> ready;
    {
      std::lock_guard lock(state_->mutex);
      ready.swap(state_->ready);
    }
    for (const auto& in : ready) {
      if (int rc = amqp_basic_reject(conn_->get(), consume_channel, in.tag, 1); rc != AMQP_STATUS_OK)
        return conn_->lost(rc);
      state_->requeued.fetch_add(1);
      settled(in.tag);
      log_delivery("requeued (buffered, never handed out)", in.tag);
      std::lock_guard lock(state_->mutex);
      state_->note_never_handed_out(in.job.id);
    }
    return {};
  }

  // Reads whatever has arrived, without blocking on the socket.
  core::Result<void> read_available() {
    return read_frames(*conn_, [this](const amqp_frame_t& frame) { return on_frame(frame); });
  }

  core::Result<void> on_frame(const amqp_frame_t& frame) {
    const bool method = frame.frame_type == AMQP_FRAME_METHOD;
    const auto id = method ? frame.payload.method.id : 0;
    if (frame.channel == dead_letter_channel) {
      if (id == AMQP_BASIC_ACK_METHOD) {
        const auto* m = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
        return on_dead_letter_confirm(m->delivery_tag, m->multiple != 0, true);
      }
      if (id == AMQP_BASIC_NACK_METHOD) {
        const auto* m = static_cast<const amqp_basic_nack_t*>(frame.payload.method.decoded);
        return on_dead_letter_confirm(m->delivery_tag, m->multiple != 0, false);
      }
      dead_letters_.on_frame(frame);  // a basic.return and its content header
      return {};
    }
    if (frame.channel != consume_channel) return {};
    if (id == AMQP_BASIC_DELIVER_METHOD) {
      on_deliver(*static_cast<const amqp_basic_deliver_t*>(frame.payload.method.decoded));
      return {};
    }
    if (id == AMQP_BASIC_CANCEL_METHOD) {
      // The queue was deleted or failed over: start again, declaring it anew.
      return core::Error{errc::consume_failed, "the broker at " + conn_->where() + " cancelled the consumer of '" +
                                                   state_->loop.options().execute_queue + "'"};
    }
    if (frame.frame_type == AMQP_FRAME_HEADER && inbound_.active) {
      on_content_header(frame);
    } else if (frame.frame_type == AMQP_FRAME_BODY && inbound_.active) {
      const amqp_bytes_t fragment = frame.payload.body_fragment;
      inbound_.received += fragment.len;
      if (!inbound_.too_large) inbound_.in.body.append(to_view(fragment));
      if (inbound_.received >= inbound_.body_size) finish_delivery();
    }
    return {};
  }

  void on_deliver(const amqp_basic_deliver_t& m) {
    inbound_ = Inbound{};
    inbound_.active = true;
    inbound_.consumer_tag.assign(to_view(m.consumer_tag));
    inbound_.in.tag = m.delivery_tag;
    inbound_.in.job.redelivered = m.redelivered != 0;
    inbound_.in.exchange.assign(to_view(m.exchange));
    inbound_.in.routing_key.assign(to_view(m.routing_key));
    inbound_.in.generation = generation_;
  }

  // The size is known before the first byte of the body: one over the limit
  // is never held (rabbitmq-c's own reader would assemble all of it).
  void on_content_header(const amqp_frame_t& frame) {
    inbound_.body_size = frame.payload.properties.body_size;
    const auto* props = static_cast<const amqp_basic_properties_t*>(frame.payload.properties.decoded);
    if (props && (props->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG))
      inbound_.in.content_type.assign(to_view(props->content_type));
    inbound_.too_large = inbound_.body_size > state_->loop.options().max_message_size;
    if (!inbound_.too_large) inbound_.in.body.reserve(static_cast<std::size_t>(inbound_.body_size));
    if (inbound_.body_size == 0) finish_delivery();
  }

  void finish_delivery() {
    Inbound done = std::move(inbound_);
    inbound_ = Inbound{};
    Incoming& in = done.in;
    state_->delivered.fetch_add(1);
    unsettled_.delivered(in.tag);
    const auto consumer = std::find_if(consumers_.begin(), consumers_.end(),
                                       [&](const Consumer& c) { return c.tag == done.consumer_tag; });
    if (consumers_.empty()) {
      bool wanted = false;
      {
        std::lock_guard lock(state_->mutex);
        wanted = !state_->consumer_cancelled && state_->prefetch > 0;
      }
      if (!wanted) {
        // Arrived while the consumer was being cancelled (prefetch 0): not ours to hold.
        amqp_basic_reject(conn_->get(), consume_channel, in.tag, 1);
        unsettled_.settled(in.tag);
        state_->requeued.fetch_add(1);
        log_delivery("requeued (arrived while the consumer was cancelled)", in.tag);
        if (!done.too_large) {
          const std::string id = wire::parse_job_request(in.body).job.id;
          std::lock_guard lock(state_->mutex);
          state_->note_never_handed_out(id);
        }
        return;
      }
      // Sent to a consumer cancelled for a new prefetch whose replacement
      // waits for earlier deliveries to settle: ours to hold, like any
      // delivery of an earlier consumer (handing it back would send it to
      // another orchestrator as a redelivery).
    }
    if (consumer != consumers_.end())
      consumer->unsettled.insert(in.tag);
    else
      ++held_by_earlier_;  // sent to a consumer cancelled since
    if (done.too_large) {
      state_->too_large.fetch_add(1);
      in.invalid_reason = "the message has " + std::to_string(done.body_size) + " bytes, more than the limit of " +
                          std::to_string(state_->loop.options().max_message_size) +
                          " bytes (max_message_size); its body was not read";
    } else {
      wire::ParsedJob parsed = wire::parse_job_request(in.body);
      bool redelivered = in.job.redelivered;
      in.job = std::move(parsed.job);
      if (redelivered && !in.job.id.empty()) {
        std::lock_guard lock(state_->mutex);
        if (state_->never_handed_out.find(in.job.id)) {
          redelivered = false;  // back from this source's own requeue: nobody saw it
          state_->never_handed_out.erase(in.job.id);
        }
      }
      in.job.redelivered = redelivered;
      if (!parsed.valid) in.invalid_reason = parsed.valid.error().message();
    }
    if (state_->loop.options().log_deliveries)
      state_->loop.log(LogLevel::debug, "delivery " + std::to_string(generation_) + "/" + std::to_string(in.tag) +
                                            ": job " + in.job.id + (in.job.redelivered ? " (redelivered)" : ""));
    state_->deliver(std::move(in));
  }

  std::shared_ptr<SourceState> state_;
  Connection* conn_ = nullptr;  // the loop's, between on_connected and on_disconnected
  std::uint64_t generation_ = 0;

  struct Consumer {
    std::string tag;
    std::size_t limit = 0;                        // its basic.qos
    std::unordered_set<std::uint64_t> unsettled;  // its deliveries not settled yet
  };
  std::vector<Consumer> consumers_;  // this connection's, on consume_channel
  std::size_t held_by_earlier_ = 0;  // unsettled deliveries of consumers cancelled since
  std::chrono::steady_clock::time_point shrink_at_ = std::chrono::steady_clock::time_point::max();
  UnsettledTags unsettled_;  // every consumer's, for multiple acks
  Inbound inbound_;

  PublishConfirms<Command> dead_letters_;  // published, awaiting their confirm
  std::deque<Command> retries_;            // returned or refused, to be published again at retry_at_
  std::chrono::steady_clock::time_point retry_at_ = std::chrono::steady_clock::time_point::max();
  Backoff retry_backoff_{std::chrono::milliseconds(50), std::chrono::milliseconds(5000)};  // as the dispatcher's
  bool returning_ = false;  // dead letters are being returned: logged once until one is confirmed
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
    state->note_settled(generation_, delivery_tag_, false);
    state->push(std::move(command));
  } catch (...) {
    // Out of memory: the delivery stays unacked until its connection closes,
    // and the broker redelivers it then.
  }
}

// --- AmqpJobSource -------------------------------------------------------------

AmqpJobSource::AmqpJobSource(asio::any_io_executor executor, AmqpOptions options) : executor_(executor) {
  detail::Brokers brokers = detail::resolve_or_throw(options);
  state_ = std::make_shared<detail::SourceState>(std::move(executor), std::move(options), std::move(brokers));
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
  for (auto& r : receivers) r.fail(core::errc::source_closed);
}

std::uint64_t AmqpJobSource::start_receive(ReceiveHandler one, BatchHandler some, std::size_t max) {
  detail::SourceState::Receiver receiver;
  receiver.one = std::move(one);
  receiver.some = std::move(some);
  receiver.max = max;
  std::unique_lock lock(state_->mutex);
  if (state_->closed) {
    lock.unlock();
    receiver.fail(core::errc::source_closed);
    return 0;
  }
  if (!state_->ready.empty()) {
    state_->hand_out(std::move(receiver), lock);
    return 0;
  }
  receiver.id = state_->next_receiver++;
  const std::uint64_t id = receiver.id;
  state_->receivers.push_back(std::move(receiver));
  return id;
}

std::vector<AmqpDelivery> AmqpJobSource::try_receive_some(std::size_t max) {
  std::vector<detail::Incoming> taken;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->closed || !state_->receivers.empty()) return {};
    taken = state_->take_ready(max);
  }
  return state_->make_deliveries(taken);
}

void AmqpJobSource::cancel_receive(const std::weak_ptr<detail::SourceState>& weak, std::uint64_t id) {
  auto state = weak.lock();
  if (!state) return;
  detail::SourceState::Receiver receiver;
  {
    std::lock_guard lock(state->mutex);
    auto it = std::find_if(state->receivers.begin(), state->receivers.end(),
                           [id](const detail::SourceState::Receiver& r) { return r.id == id; });
    if (it == state->receivers.end()) return;  // already completed
    receiver = std::move(*it);
    state->receivers.erase(it);
  }
  receiver.fail(asio::error::operation_aborted);
}

void AmqpJobSource::ack(AmqpDelivery& delivery) { ack(std::span<AmqpDelivery>(&delivery, 1)); }

void AmqpJobSource::ack(std::span<AmqpDelivery> deliveries) {
  std::vector<detail::Command> commands;
  commands.reserve(deliveries.size());
  for (auto& delivery : deliveries) {
    if (!delivery.state_) continue;
    auto state = std::move(delivery.state_);
    detail::Command command;
    command.kind = detail::Command::Kind::ack;
    command.generation = delivery.generation_;
    command.tag = delivery.delivery_tag_;
    state->note_settled(command.generation, command.tag, true);
    commands.push_back(std::move(command));
  }
  state_->push(std::move(commands));
}

void AmqpJobSource::reject(AmqpDelivery& delivery, core::Disposition disposition, std::string_view reason) {
  if (!delivery.state_) return;
  auto state = std::move(delivery.state_);
  detail::Command command;
  command.generation = delivery.generation_;
  command.tag = delivery.delivery_tag_;
  state->note_settled(command.generation, command.tag, false);
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

std::string AmqpJobSource::endpoint() const { return state_->loop.where(); }

std::string AmqpJobSource::last_error() const { return state_->loop.last_error(); }

LostDeliveries AmqpJobSource::lost_deliveries(std::chrono::milliseconds settled_within) const {
  LostDeliveries lost;
  const auto since = std::chrono::steady_clock::now() - settled_within;
  std::lock_guard lock(state_->mutex);
  auto& acked = state_->lost_acked;
  while (!acked.empty() && acked.front().first < since) acked.pop_front();
  for (const auto& [at, id] : acked) lost.settled.push_back(id);
  for (const auto& [generation, deliveries] : state_->handed_out) {
    if (generation == state_->live_generation) continue;
    for (const auto& [tag, id] : deliveries) lost.running.push_back(id);
  }
  return lost;
}

AmqpSourceStats AmqpJobSource::stats() const {
  AmqpSourceStats s;
  s.delivered = state_->delivered.load();
  s.acked = state_->acked.load();
  s.ack_frames = state_->ack_frames.load();
  s.requeued = state_->requeued.load();
  s.dead_lettered = state_->dead_lettered.load();
  s.dead_letters_returned = state_->dead_letters_returned.load();
  s.too_large = state_->too_large.load();
  s.connects = state_->loop.connects();
  s.connected = state_->loop.connected();
  std::lock_guard lock(state_->mutex);
  s.prefetch = state_->prefetch;
  return s;
}

}  // namespace blacktree::amqp
