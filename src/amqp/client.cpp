// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/client.hpp>

#include "connection.hpp"

#include <algorithm>
#include <vector>

namespace blacktree::amqp {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;
constexpr amqp_channel_t channel = 1;

std::string reply_text(std::uint16_t code, amqp_bytes_t text) {
  return std::to_string(code) + " " + std::string(detail::to_view(text));
}

}  // namespace

AmqpClient::AmqpClient() : conn_(std::make_unique<detail::Connection>()) {}
AmqpClient::~AmqpClient() { close(); }

void AmqpClient::close() noexcept { conn_->close(); }

const std::string& AmqpClient::where() const noexcept { return conn_->where(); }

core::Result<void> AmqpClient::open(const AmqpOptions& options, std::string_view role, std::size_t max_addresses) {
  if (!brokers_ || url_ != options.url) {
    auto brokers = detail::resolve_brokers(options);
    if (!brokers) return std::move(brokers).error();
    brokers_ = std::make_unique<detail::Brokers>(std::move(*brokers));
    url_ = options.url;
  }
  const std::size_t attempts = std::max<std::size_t>(1, std::min(max_addresses, brokers_->size()));
  std::vector<core::Error> errors;
  for (std::size_t i = 0; i < attempts; ++i) {
    if (auto opened = open_at(brokers_->next(), options, role); !opened)
      errors.push_back(std::move(opened).error());
    else
      return {};
  }
  if (errors.size() == 1) return std::move(errors.front());
  // The code of the most telling failure: a refused login or a TLS problem
  // says more than a node that is down.
  std::error_code code = errors.front().code();
  for (const auto& e : errors) {
    if (e.code() != errc::connect_failed) {
      code = e.code();
      break;
    }
  }
  std::string message = "no broker node could be used (" + std::to_string(errors.size()) + " tried): ";
  for (std::size_t i = 0; i < errors.size(); ++i) message += (i ? "; " : "") + errors[i].message();
  return core::Error{code, std::move(message)};
}

core::Result<void> AmqpClient::open_at(const AmqpEndpoint& endpoint, const AmqpOptions& options,
                                       std::string_view role) {
  // Blocking in rabbitmq-c, as this client does, it sends and checks the
  // heartbeats itself: a long wait survives idle NATs and notices a dead broker.
  if (auto opened = conn_->open(endpoint, options, role); !opened) return opened;
  if (auto confirming = conn_->confirm_select(channel); !confirming) {
    conn_->abandon();
    return confirming;
  }
  return {};
}

core::Result<std::string> AmqpClient::subscribe(const std::string& exchange, const std::string& routing_key) {
  if (auto declared = conn_->declare_exchange(channel, exchange, "topic"); !declared)
    return std::move(declared).error();
  amqp_connection_state_t state = conn_->get();
  amqp_queue_declare_ok_t* declared = amqp_queue_declare(state, channel, amqp_empty_bytes, /*passive=*/0,
                                                         /*durable=*/0, /*exclusive=*/1, /*auto_delete=*/1,
                                                         amqp_empty_table);
  const std::string context = "cannot declare a private queue on " + conn_->where();
  if (auto ok = detail::check_reply(amqp_get_rpc_reply(state), errc::declare_failed, context); !ok)
    return std::move(ok).error();
  if (!declared) return core::Error{errc::declare_failed, context};
  std::string queue(detail::to_view(declared->queue));
  if (auto bound = conn_->bind_queue(channel, queue, exchange, routing_key); !bound) return std::move(bound).error();
  return queue;
}

core::Result<AmqpClient::QueueCounts> AmqpClient::queue_counts(const std::string& queue) {
  amqp_connection_state_t state = conn_->get();
  amqp_queue_declare_ok_t* declared = amqp_queue_declare(state, channel, detail::to_bytes(queue), /*passive=*/1,
                                                         /*durable=*/0, /*exclusive=*/0, /*auto_delete=*/0,
                                                         amqp_empty_table);
  const std::string context = "cannot read the counts of queue '" + queue + "' on " + conn_->where();
  if (auto ok = detail::check_reply(amqp_get_rpc_reply(state), errc::declare_failed, context); !ok)
    return std::move(ok).error();
  if (!declared) return core::Error{errc::declare_failed, context};
  return QueueCounts{declared->message_count, declared->consumer_count};
}

core::Result<void> AmqpClient::publish_confirmed(const std::string& exchange, const std::string& routing_key,
                                                 std::string_view body, milliseconds timeout,
                                                 std::optional<std::uint8_t> priority) {
  amqp_connection_state_t state = conn_->get();
  const std::string& where = conn_->where();
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.content_type = amqp_cstring_bytes("application/json");
  props.delivery_mode = 2;  // persistent: the message survives a broker restart
  if (priority) {
    props._flags |= AMQP_BASIC_PRIORITY_FLAG;
    props.priority = *priority;
  }
  const std::string where_to = exchange.empty() ? "queue '" + routing_key + "'"
                                                : "exchange '" + exchange + "' (routing key '" + routing_key + "')";
  if (const int rc = amqp_basic_publish(state, channel, detail::to_bytes(exchange), detail::to_bytes(routing_key),
                                        /*mandatory=*/1, /*immediate=*/0, &props, detail::to_bytes(body));
      rc != AMQP_STATUS_OK) {
    return core::Error{errc::publish_failed,
                       "cannot publish to " + where_to + " on " + where + ": " + amqp_error_string2(rc)};
  }

  const auto deadline = Clock::now() + timeout;
  std::string returned;
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left <= milliseconds(0)) {
      return core::Error{errc::timed_out, "the broker at " + where + " did not confirm the message within " +
                                              std::to_string(timeout.count() / 1000) +
                                              " s: it may or may not have been queued"};
    }
    amqp_maybe_release_buffers(state);
    amqp_frame_t frame{};
    timeval tv = detail::to_timeval(left);
    const int rc = amqp_simple_wait_frame_noblock(state, &frame, &tv);
    if (rc == AMQP_STATUS_TIMEOUT) continue;
    if (rc != AMQP_STATUS_OK) {
      return core::Error{errc::connection_lost, "lost the connection to " + where +
                                                    " before it confirmed the message (" + amqp_error_string2(rc) +
                                                    "): it may or may not have been queued"};
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // the returned message's header and body
    if (auto open = detail::closed_by_broker(*conn_, frame); !open)
      return open.error().with_context("cannot publish to " + where_to);
    switch (frame.payload.method.id) {
      case AMQP_BASIC_RETURN_METHOD: {
        const auto* m = static_cast<const amqp_basic_return_t*>(frame.payload.method.decoded);
        returned = reply_text(m->reply_code, m->reply_text);
        break;
      }
      case AMQP_BASIC_ACK_METHOD:
        if (returned.empty()) return {};
        return core::Error{errc::unroutable,
                           "the broker at " + where + " has no queue for the message (" + returned + "): " +
                               (exchange.empty() ? "queue '" + routing_key + "' does not exist"
                                                 : "nothing is bound to exchange '" + exchange +
                                                       "' with routing key '" + routing_key + "'")};
      case AMQP_BASIC_NACK_METHOD:
        return core::Error{errc::publish_nacked, "the broker at " + where +
                                                     " refused the message (basic.nack): it was not queued; try again"};
      default:
        break;
    }
  }
}

core::Result<void> AmqpClient::consume(const std::string& queue) {
  amqp_basic_consume(conn_->get(), channel, detail::to_bytes(queue), amqp_empty_bytes, /*no_local=*/0, /*no_ack=*/1,
                     /*exclusive=*/1, amqp_empty_table);
  return detail::check_reply(amqp_get_rpc_reply(conn_->get()), errc::consume_failed,
                             "cannot consume from queue '" + queue + "' on " + conn_->where());
}

core::Result<std::optional<std::string>> AmqpClient::next(milliseconds timeout) {
  amqp_connection_state_t state = conn_->get();
  amqp_maybe_release_buffers(state);
  amqp_envelope_t envelope{};
  timeval tv = detail::to_timeval(timeout);
  const amqp_rpc_reply_t reply = amqp_consume_message(state, &envelope, &tv, 0);
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
    std::string body(detail::to_view(envelope.message.body));
    amqp_destroy_envelope(&envelope);
    return std::optional<std::string>(std::move(body));
  }
  if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_TIMEOUT)
    return std::optional<std::string>();
  if (reply.reply_type != AMQP_RESPONSE_LIBRARY_EXCEPTION || reply.library_error != AMQP_STATUS_UNEXPECTED_STATE)
    return conn_->lost(detail::describe_reply(reply));
  // A method other than a delivery arrived: read it to see whether it ends us.
  amqp_frame_t frame{};
  timeval zero{0, 0};
  const int rc = amqp_simple_wait_frame_noblock(state, &frame, &zero);
  if (rc == AMQP_STATUS_TIMEOUT) return std::optional<std::string>();
  if (rc != AMQP_STATUS_OK) return conn_->lost(rc);
  if (auto open = detail::closed_by_broker(*conn_, frame); !open) return std::move(open).error();
  if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_CANCEL_METHOD)
    return core::Error{errc::consume_failed,
                       "the broker at " + conn_->where() + " cancelled the subscription (queue deleted?)"};
  return std::optional<std::string>();
}

}  // namespace blacktree::amqp
