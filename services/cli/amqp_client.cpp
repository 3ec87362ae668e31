// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "amqp_client.hpp"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace blacktree::cli {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

timeval to_timeval(milliseconds ms) {
  ms = std::max(ms, milliseconds(0));
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

amqp_bytes_t to_bytes(std::string_view s) { return amqp_bytes_t{s.size(), const_cast<char*>(s.data())}; }
std::string to_string(amqp_bytes_t bytes) { return {static_cast<const char*>(bytes.bytes), bytes.len}; }

std::string close_text(std::uint16_t code, amqp_bytes_t text) {
  return std::to_string(code) + " " + to_string(text);
}

std::string describe_reply(const amqp_rpc_reply_t& reply) {
  switch (reply.reply_type) {
    case AMQP_RESPONSE_NORMAL:
      return {};
    case AMQP_RESPONSE_NONE:
      return "no reply from the broker";
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return amqp_error_string2(reply.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (reply.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_connection_close_t*>(reply.reply.decoded);
        return "the broker closed the connection (" + close_text(m->reply_code, m->reply_text) + ")";
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_channel_close_t*>(reply.reply.decoded);
        return "the broker closed the channel (" + close_text(m->reply_code, m->reply_text) + ")";
      }
      return "unexpected reply from the broker (method " + std::to_string(reply.reply.id) + ")";
  }
  return "unknown rabbitmq-c reply";
}

// rabbitmq-c says only "a socket error occurred"; a plain connect() says
// "connection refused" or "no route to host", which a person can act on.
std::string probe_tcp(const std::string& host, int port, milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    return std::string("cannot resolve ") + host + ": " + ::gai_strerror(rc);
  std::string why;
  for (addrinfo* ai = found; ai; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int error = 0;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      error = errno;
      if (error == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
        socklen_t len = sizeof error;
        if (n == 0) {
          error = ETIMEDOUT;
        } else if (n < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) {
          error = errno;
        }
      }
    }
    ::close(fd);
    if (error == 0) {
      why.clear();
      break;
    }
    why = std::strerror(error);
    for (auto& c : why) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  ::freeaddrinfo(found);
  return why;
}

// The broker closing the channel or the connection, as text ("" for any other method).
std::string closed_by_broker(amqp_connection_state_t state, const amqp_frame_t& frame) {
  if (frame.frame_type != AMQP_FRAME_METHOD) return {};
  if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_channel_close_t*>(frame.payload.method.decoded);
    return "the broker closed the channel (" + close_text(m->reply_code, m->reply_text) + ")";
  }
  if (frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_connection_close_t*>(frame.payload.method.decoded);
    amqp_connection_close_ok_t ok{};
    amqp_send_method(state, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    return "the broker closed the connection (" + close_text(m->reply_code, m->reply_text) + ")";
  }
  return {};
}

}  // namespace

AmqpClient::~AmqpClient() { close(); }

void AmqpClient::abandon() noexcept {
  if (!state_) return;
  amqp_destroy_connection(state_);
  state_ = nullptr;
}

void AmqpClient::close() noexcept {
  if (!state_) return;
  amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
  abandon();
}

std::string AmqpClient::open(const amqp::AmqpEndpoint& endpoint, const amqp::TlsOptions& tls, milliseconds timeout) {
  abandon();
  where_ = endpoint.describe();
  const std::string cannot_connect = "cannot connect to the broker at " + where_ + ": ";
  state_ = amqp_new_connection();
  if (!state_) return cannot_connect + "out of memory";

  amqp_socket_t* socket = nullptr;
  if (endpoint.tls) {
    socket = amqp_ssl_socket_new(state_);
    if (!socket) {
      abandon();
      return cannot_connect + "cannot create a TLS socket";
    }
    amqp_ssl_socket_set_verify_peer(socket, tls.verify_peer ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(socket, tls.verify_hostname ? 1 : 0);
    if (!tls.ca_file.empty()) {
      if (const int rc = amqp_ssl_socket_set_cacert(socket, tls.ca_file.c_str()); rc != AMQP_STATUS_OK) {
        abandon();
        return "cannot use the CA file " + tls.ca_file + " (--mq-tls-ca-file): " + amqp_error_string2(rc);
      }
    }
    if (!tls.cert_file.empty()) {
      if (const int rc = amqp_ssl_socket_set_key(socket, tls.cert_file.c_str(), tls.key_file.c_str());
          rc != AMQP_STATUS_OK) {
        abandon();
        return "cannot use the client certificate " + tls.cert_file + " and key " + tls.key_file +
               " (--mq-tls-cert-file, --mq-tls-key-file): " + amqp_error_string2(rc);
      }
    }
  } else {
    socket = amqp_tcp_socket_new(state_);
    if (!socket) {
      abandon();
      return cannot_connect + "cannot create a socket";
    }
  }

  timeval tv = to_timeval(timeout);
  if (const int rc = amqp_socket_open_noblock(socket, endpoint.host.c_str(), endpoint.port, &tv);
      rc != AMQP_STATUS_OK) {
    abandon();
    std::string detail = amqp_error_string2(rc);
    if (rc == AMQP_STATUS_SOCKET_ERROR || rc == AMQP_STATUS_TCP_ERROR || rc == AMQP_STATUS_SOCKET_CLOSED) {
      if (std::string why = probe_tcp(endpoint.host, endpoint.port, timeout); !why.empty()) detail = why;
    }
    return cannot_connect + detail + ". Is RabbitMQ running there? (set --mq-url or MQ_URL)";
  }
  amqp_set_handshake_timeout(state_, &tv);
  amqp_set_rpc_timeout(state_, &tv);

  amqp_table_entry_t property{};
  property.key = amqp_cstring_bytes("connection_name");
  property.value.kind = AMQP_FIELD_KIND_UTF8;
  property.value.value.bytes = amqp_cstring_bytes("blacktree cli");
  amqp_table_t properties{1, &property};
  // Heartbeats keep a long `--wait` alive through idle NATs and tell us when
  // the broker is gone; rabbitmq-c sends and checks them while we block in it.
  const amqp_rpc_reply_t login =
      amqp_login_with_properties(state_, endpoint.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, 30, &properties,
                                 AMQP_SASL_METHOD_PLAIN, endpoint.username.c_str(), endpoint.password.reveal().c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    std::string detail = describe_reply(login);
    abandon();
    if (login.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && login.library_error == AMQP_STATUS_CONNECTION_CLOSED)
      detail += " (RabbitMQ does this when the username or password is wrong)";
    return "cannot log in to the broker at " + where_ + " as '" + endpoint.username + "': " + detail +
           ". Check the credentials and vhost in --mq-url / MQ_URL";
  }

  amqp_channel_open(state_, 1);
  if (auto error = describe_reply(amqp_get_rpc_reply(state_)); !error.empty()) {
    abandon();
    return "cannot open a channel on " + where_ + ": " + error;
  }
  amqp_confirm_select(state_, 1);
  if (auto error = describe_reply(amqp_get_rpc_reply(state_)); !error.empty()) {
    abandon();
    return "the broker at " + where_ + " refused publisher confirms: " + error;
  }
  return {};
}

std::string AmqpClient::subscribe(const std::string& exchange, const std::string& routing_key, std::string& queue) {
  // Declared exactly as the orchestrator declares it (topic, durable, not
  // auto-delete), so whichever of us comes first, the other's declare agrees.
  amqp_exchange_declare(state_, 1, to_bytes(exchange), amqp_cstring_bytes("topic"), /*passive=*/0, /*durable=*/1,
                        /*auto_delete=*/0, /*internal=*/0, amqp_empty_table);
  if (auto error = describe_reply(amqp_get_rpc_reply(state_)); !error.empty()) {
    return "cannot declare the events exchange '" + exchange + "' (topic, durable) on " + where_ + ": " + error +
           (error.find("406") != std::string::npos
                ? ". It exists with other settings: set --events-exchange to the orchestrator's events exchange"
                : "");
  }
  amqp_queue_declare_ok_t* declared = amqp_queue_declare(state_, 1, amqp_empty_bytes, /*passive=*/0, /*durable=*/0,
                                                         /*exclusive=*/1, /*auto_delete=*/1, amqp_empty_table);
  if (auto error = describe_reply(amqp_get_rpc_reply(state_)); !error.empty() || !declared)
    return "cannot declare a private queue for the job's events on " + where_ + ": " + error;
  queue = to_string(declared->queue);
  amqp_queue_bind(state_, 1, to_bytes(queue), to_bytes(exchange), to_bytes(routing_key), amqp_empty_table);
  if (auto error = describe_reply(amqp_get_rpc_reply(state_)); !error.empty())
    return "cannot bind a queue to the events exchange '" + exchange + "' on " + where_ + ": " + error;
  return {};
}

std::string AmqpClient::publish_confirmed(const std::string& exchange, const std::string& routing_key,
                                          std::string_view body, milliseconds timeout) {
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.content_type = amqp_cstring_bytes("application/json");
  props.delivery_mode = 2;  // persistent: the job survives a broker restart
  const std::string where_to = exchange.empty() ? "queue '" + routing_key + "'"
                                                : "exchange '" + exchange + "' (routing key '" + routing_key + "')";
  if (const int rc = amqp_basic_publish(state_, 1, to_bytes(exchange), to_bytes(routing_key), /*mandatory=*/1,
                                        /*immediate=*/0, &props, to_bytes(body));
      rc != AMQP_STATUS_OK) {
    return "cannot publish the job to " + where_to + " on " + where_ + ": " + amqp_error_string2(rc);
  }

  const auto deadline = Clock::now() + timeout;
  std::string returned;
  for (;;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left <= milliseconds(0)) {
      return "the broker at " + where_ + " did not confirm the job within " +
             std::to_string(timeout.count() / 1000) + " s: it may or may not have been queued";
    }
    amqp_maybe_release_buffers(state_);
    amqp_frame_t frame{};
    timeval tv = to_timeval(left);
    const int rc = amqp_simple_wait_frame_noblock(state_, &frame, &tv);
    if (rc == AMQP_STATUS_TIMEOUT) continue;
    if (rc != AMQP_STATUS_OK) {
      return "lost the connection to " + where_ + " before it confirmed the job (" + amqp_error_string2(rc) +
             "): it may or may not have been queued";
    }
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;  // the returned message's header and body
    if (auto error = closed_by_broker(state_, frame); !error.empty()) {
      return "cannot publish the job to " + where_to + " on " + where_ + ": " + error;
    }
    switch (frame.payload.method.id) {
      case AMQP_BASIC_RETURN_METHOD: {
        const auto* m = static_cast<const amqp_basic_return_t*>(frame.payload.method.decoded);
        returned = close_text(m->reply_code, m->reply_text);
        break;
      }
      case AMQP_BASIC_ACK_METHOD:
        if (!returned.empty()) {
          return "the broker at " + where_ + " has no queue for the job (" + returned + "): " +
                 (exchange.empty() ? "queue '" + routing_key + "' does not exist; start the orchestrator first "
                                                              "(it declares the queue) or check --execute-queue"
                                   : "nothing is bound to exchange '" + exchange + "' with routing key '" +
                                         routing_key + "'; check --exchange and --execute-queue");
        }
        return {};
      case AMQP_BASIC_NACK_METHOD:
        return "the broker at " + where_ + " refused the job (basic.nack): it was not queued; try again";
      default:
        break;
    }
  }
}

std::string AmqpClient::consume(const std::string& queue) {
  amqp_basic_consume(state_, 1, to_bytes(queue), amqp_empty_bytes, /*no_local=*/0, /*no_ack=*/1, /*exclusive=*/1,
                     amqp_empty_table);
  if (auto error = describe_reply(amqp_get_rpc_reply(state_)); !error.empty())
    return "cannot consume the job's events on " + where_ + ": " + error;
  return {};
}

AmqpClient::Received AmqpClient::next(milliseconds timeout, std::string& body, std::string& error) {
  amqp_maybe_release_buffers(state_);
  amqp_envelope_t envelope{};
  timeval tv = to_timeval(timeout);
  const amqp_rpc_reply_t reply = amqp_consume_message(state_, &envelope, &tv, 0);
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
    body = to_string(envelope.message.body);
    amqp_destroy_envelope(&envelope);
    return Received::message;
  }
  if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_TIMEOUT)
    return Received::nothing;
  if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
    // A method other than a delivery arrived: read it to see whether it ends us.
    amqp_frame_t frame{};
    timeval zero{0, 0};
    const int rc = amqp_simple_wait_frame_noblock(state_, &frame, &zero);
    if (rc == AMQP_STATUS_TIMEOUT) return Received::nothing;
    if (rc != AMQP_STATUS_OK) {
      error = "lost the connection to " + where_ + ": " + amqp_error_string2(rc);
      return Received::failed;
    }
    if (auto closed = closed_by_broker(state_, frame); !closed.empty()) {
      error = closed + " at " + where_;
      return Received::failed;
    }
    if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
      error = "the broker at " + where_ + " cancelled the subscription to the job's events (queue deleted?)";
      return Received::failed;
    }
    return Received::nothing;
  }
  error = "lost the connection to " + where_ + ": " + describe_reply(reply);
  return Received::failed;
}

}  // namespace blacktree::cli
