// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/peers.hpp>

#include "connection_loop.hpp"

#include <blacktree/wire/wire.hpp>

#include <atomic>
#include <stdexcept>
#include <utility>

namespace blacktree::amqp {
namespace detail {

namespace {
constexpr amqp_channel_t peers_channel = 1;
}

struct PeersState {
  PeersState(AmqpOptions options, Brokers brokers, std::string s, AmqpPeers::Report r, AmqpPeers::Heard h)
      : self(std::move(s)), report(std::move(r)), heard(std::move(h)),
        loop(std::move(options), std::move(brokers), "peers") {}

  const std::string self;
  const AmqpPeers::Report report;
  const AmqpPeers::Heard heard;
  std::atomic<std::uint64_t> sent{0}, heard_count{0}, malformed{0};
  ConnectionLoop loop;  // last: its thread may use everything above until stop() joins it
};

namespace {

class PeersWork final : public ConnectionWork {
 public:
  explicit PeersWork(std::shared_ptr<PeersState> state) : state_(std::move(state)) {}

  core::Result<void> on_connected(Connection& conn) override {
    const AmqpOptions& o = state_->loop.options();
    if (o.declare) {
      if (auto declared = conn.declare_exchange(peers_channel, o.peers_exchange, "fanout"); !declared)
        return declared;
    }
    // Server-named, exclusive: it goes with this connection, and a peer only
    // hears what is said while it listens (everything is said again).
    amqp_queue_declare_ok_t* ok =
        amqp_queue_declare(conn.get(), peers_channel, amqp_empty_bytes, 0, 0, 1, 1, amqp_empty_table);
    if (auto declared = check_reply(amqp_get_rpc_reply(conn.get()), errc::declare_failed,
                                    "cannot declare a queue for exchange '" + o.peers_exchange + "'");
        !declared)
      return declared;
    if (!ok) return core::Error{errc::declare_failed, "no queue name for exchange '" + o.peers_exchange + "'"};
    const std::string queue(to_view(ok->queue));
    if (auto bound = conn.bind_queue(peers_channel, queue, o.peers_exchange, ""); !bound) return bound;
    amqp_basic_consume(conn.get(), peers_channel, to_bytes(queue), amqp_empty_bytes, /*no_local=*/0, /*no_ack=*/1,
                       /*exclusive=*/1, amqp_empty_table);
    if (auto consuming = check_reply(amqp_get_rpc_reply(conn.get()), errc::consume_failed,
                                     "cannot consume from exchange '" + o.peers_exchange + "'");
        !consuming)
      return consuming;
    inbound_ = Inbound{};
    next_report_ = std::chrono::steady_clock::now();  // say at once what this one holds
    return {};
  }

  core::Result<void> on_ready(Connection& conn) override {
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_report_) {
      next_report_ = now + state_->loop.options().peers_interval;
      if (auto said = say(conn); !said) return said;
    }
    return read_frames(conn, [this](const amqp_frame_t& frame) { return on_frame(frame); });
  }

  void on_disconnected() override { inbound_ = Inbound{}; }

  std::chrono::steady_clock::time_point wake_at() const override { return next_report_; }

 private:
  struct Inbound {
    bool active = false;
    bool too_large = false;
    std::uint64_t size = 0;
    std::uint64_t received = 0;
    std::string body;
  };

  core::Result<void> say(Connection& conn) {
    PeerNews news = state_->report ? state_->report() : PeerNews{};
    if (news.running.empty() && news.settled.empty() && news.carried.empty()) return {};
    const AmqpOptions& o = state_->loop.options();
    v1::PeerRuns message;
    message.set_from(state_->self);
    message.set_queue(o.execute_queue);
    for (auto& id : news.running) message.add_running(std::move(id));
    for (auto& id : news.settled) message.add_settled(std::move(id));
    for (auto& id : news.carried) message.add_carried(std::move(id));
    const std::string body = wire::to_json(message);
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 1;  // transient: said again every interval while it matters
    props.content_type = amqp_cstring_bytes("application/json");
    const int rc = amqp_basic_publish(conn.get(), peers_channel, to_bytes(o.peers_exchange), amqp_empty_bytes, 0,
                                      0, &props, to_bytes(body));
    if (rc != AMQP_STATUS_OK) return conn.lost(rc);
    state_->sent.fetch_add(1);
    return {};
  }

  core::Result<void> on_frame(const amqp_frame_t& frame) {
    if (frame.channel != peers_channel) return {};
    if (frame.frame_type == AMQP_FRAME_METHOD) {
      if (frame.payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
        inbound_ = Inbound{};
        inbound_.active = true;
      } else if (frame.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
        return core::Error{errc::consume_failed, "the broker cancelled the consumer of exchange '" +
                                                     state_->loop.options().peers_exchange + "'"};
      }
      return {};
    }
    if (!inbound_.active) return {};
    if (frame.frame_type == AMQP_FRAME_HEADER) {
      inbound_.size = frame.payload.properties.body_size;
      inbound_.too_large = inbound_.size > state_->loop.options().max_message_size;
      if (inbound_.size == 0) finish();
    } else if (frame.frame_type == AMQP_FRAME_BODY) {
      const amqp_bytes_t fragment = frame.payload.body_fragment;
      inbound_.received += fragment.len;
      if (!inbound_.too_large) inbound_.body.append(to_view(fragment));
      if (inbound_.received >= inbound_.size) finish();
    }
    return {};
  }

  void finish() {
    Inbound done = std::move(inbound_);
    inbound_ = Inbound{};
    v1::PeerRuns message;
    if (done.too_large || !wire::from_json(done.body, message)) {
      if (state_->malformed.fetch_add(1) == 0)
        state_->loop.log(LogLevel::warning, "ignoring a message on exchange '" +
                                                state_->loop.options().peers_exchange +
                                                "' that is not a PeerRuns (logged once)");
      return;
    }
    if (message.from() == state_->self || message.queue() != state_->loop.options().execute_queue) return;
    state_->heard_count.fetch_add(1);
    if (!state_->heard) return;
    PeerNews news;
    news.from = message.from();
    news.running.assign(message.running().begin(), message.running().end());
    news.settled.assign(message.settled().begin(), message.settled().end());
    news.carried.assign(message.carried().begin(), message.carried().end());
    state_->heard(std::move(news));
  }

  std::shared_ptr<PeersState> state_;
  Inbound inbound_;
  std::chrono::steady_clock::time_point next_report_ = std::chrono::steady_clock::time_point::max();
};

}  // namespace
}  // namespace detail

AmqpPeers::AmqpPeers(AmqpOptions options, std::string self, Report report, Heard heard) {
  if (self.empty()) throw std::invalid_argument("AmqpPeers: the orchestrator's id (self) is empty");
  if (options.peers_exchange.empty()) throw std::invalid_argument("AmqpPeers: peers_exchange is empty");
  if (options.peers_interval.count() <= 0) throw std::invalid_argument("AmqpPeers: peers_interval must be positive");
  detail::Brokers brokers = detail::resolve_or_throw(options);
  state_ = std::make_shared<detail::PeersState>(std::move(options), std::move(brokers), std::move(self),
                                                std::move(report), std::move(heard));
  state_->loop.start(std::make_unique<detail::PeersWork>(state_));
}

AmqpPeers::~AmqpPeers() { stop(); }

void AmqpPeers::stop() { state_->loop.stop(); }

bool AmqpPeers::connected() const noexcept { return state_->loop.connected(); }

std::string AmqpPeers::endpoint() const { return state_->loop.where(); }

AmqpPeersStats AmqpPeers::stats() const {
  AmqpPeersStats s;
  s.sent = state_->sent.load();
  s.heard = state_->heard_count.load();
  s.malformed = state_->malformed.load();
  s.connects = state_->loop.connects();
  s.connected = state_->loop.connected();
  return s;
}

}  // namespace blacktree::amqp
