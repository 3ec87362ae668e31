// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "connection.hpp"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace blacktree::amqp::detail {

timeval to_timeval(std::chrono::milliseconds ms) {
  ms = std::max(ms, std::chrono::milliseconds(0));
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

namespace {

std::string close_text(const char* what, std::uint16_t code, amqp_bytes_t text) {
  return std::string(what) + " (" + std::to_string(code) + " " + std::string(to_view(text)) + ")";
}

// Why a TCP connection to host:port fails ("connection refused"), or "" if it does not.
std::string probe_tcp(const std::string& host, int port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
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
        if (n == 0)
          error = ETIMEDOUT;
        else if (n < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0)
          error = errno;
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

}  // namespace

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
        return close_text("the broker closed the connection", m->reply_code, m->reply_text);
      }
      if (reply.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto* m = static_cast<const amqp_channel_close_t*>(reply.reply.decoded);
        return close_text("the broker closed the channel", m->reply_code, m->reply_text);
      }
      return "unexpected reply from the broker (method " + std::to_string(reply.reply.id) + ")";
  }
  return "unknown rabbitmq-c reply";
}

core::Result<void> check_reply(const amqp_rpc_reply_t& reply, errc code, std::string_view context) {
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) return {};
  return core::Error{code, std::string(context) + ": " + describe_reply(reply)};
}

PollResult wait(int socket_fd, const Waker& waker, std::chrono::milliseconds timeout) noexcept {
  pollfd fds[2] = {{waker.fd(), POLLIN, 0}, {socket_fd, POLLIN, 0}};
  const nfds_t n = socket_fd >= 0 ? 2 : 1;
  const int ms = timeout.count() < 0 ? -1 : static_cast<int>(std::min<long long>(timeout.count(), 1 << 30));
  PollResult result;
  const int rc = ::poll(fds, n, ms);
  if (rc <= 0) return result;  // timeout or EINTR: the caller loops anyway
  result.woken = (fds[0].revents & POLLIN) != 0;
  result.socket_ready = n == 2 && fds[1].revents != 0;
  return result;
}

// --- Connection --------------------------------------------------------------

int Connection::fd() const noexcept { return state_ ? amqp_get_sockfd(state_) : -1; }

CorkedSends::CorkedSends(const Connection& conn, std::size_t count) noexcept {
  if (count < 2 || conn.fd() < 0) return;
  const int on = 1;
  if (::setsockopt(conn.fd(), IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0) fd_ = conn.fd();
}

CorkedSends::~CorkedSends() {
  if (fd_ < 0) return;
  const int off = 0;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_CORK, &off, sizeof off);  // pushes what waits
}

bool Connection::has_buffered() const noexcept {
  return state_ && (amqp_frames_enqueued(state_) || amqp_data_in_buffer(state_));
}

bool Connection::heartbeat_expired() const noexcept {
  if (heartbeat_.count() == 0) return false;
  return std::chrono::steady_clock::now() - last_received_ > 2 * heartbeat_ + std::chrono::seconds(1);
}

std::chrono::milliseconds Connection::poll_timeout() const noexcept {
  if (heartbeat_.count() == 0) return std::chrono::milliseconds(-1);
  return std::chrono::duration_cast<std::chrono::milliseconds>(heartbeat_) / 2;
}

core::Result<void> Connection::open(const AmqpEndpoint& endpoint, const AmqpOptions& options,
                                    std::string_view role) {
  abandon();
  where_ = endpoint.describe();
  auto fail = [this](errc code, std::string message) {
    abandon();
    return core::Error{code, std::move(message)};
  };
  state_ = amqp_new_connection();
  if (!state_) return fail(errc::connect_failed, "cannot connect to " + where_ + ": out of memory");

  amqp_socket_t* socket = nullptr;
  if (endpoint.tls) {
    socket = amqp_ssl_socket_new(state_);
    if (!socket) return fail(errc::connect_failed, "cannot connect to " + where_ + ": cannot create a TLS socket");
    amqp_ssl_socket_set_verify_peer(socket, options.tls.verify_peer ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(socket, options.tls.verify_hostname ? 1 : 0);
    if (!options.tls.ca_file.empty()) {
      if (int rc = amqp_ssl_socket_set_cacert(socket, options.tls.ca_file.c_str()); rc != AMQP_STATUS_OK)
        return fail(errc::tls_setup_failed,
                    "cannot use CA file " + options.tls.ca_file + " for " + where_ + ": " + amqp_error_string2(rc));
    }
    if (!options.tls.cert_file.empty()) {
      if (int rc = amqp_ssl_socket_set_key(socket, options.tls.cert_file.c_str(), options.tls.key_file.c_str());
          rc != AMQP_STATUS_OK)
        return fail(errc::tls_setup_failed, "cannot use client certificate " + options.tls.cert_file + " / key " +
                                                options.tls.key_file + " for " + where_ + ": " +
                                                amqp_error_string2(rc));
    }
  } else {
    socket = amqp_tcp_socket_new(state_);
    if (!socket) return fail(errc::connect_failed, "cannot connect to " + where_ + ": cannot create a socket");
  }

  timeval timeout = to_timeval(options.connect_timeout);
  if (int rc = amqp_socket_open_noblock(socket, endpoint.host.c_str(), endpoint.port, &timeout);
      rc != AMQP_STATUS_OK) {
    std::string detail = amqp_error_string2(rc);
    if (rc == AMQP_STATUS_SOCKET_ERROR || rc == AMQP_STATUS_TCP_ERROR || rc == AMQP_STATUS_SOCKET_CLOSED) {
      // rabbitmq-c's text is generic ("a socket error occurred"); ask the network what it was.
      if (std::string why = probe_tcp(endpoint.host, endpoint.port, options.connect_timeout); !why.empty())
        detail = why;
    }
    return fail(errc::connect_failed, "cannot connect to " + where_ + ": " + detail);
  }
  amqp_set_handshake_timeout(state_, &timeout);
  amqp_set_rpc_timeout(state_, &timeout);

  const std::string name = options.connection_name + " " + std::string(role);
  amqp_table_entry_t property{};
  property.key = amqp_cstring_bytes("connection_name");
  property.value.kind = AMQP_FIELD_KIND_UTF8;
  property.value.value.bytes = to_bytes(name);
  amqp_table_t properties{1, &property};
  const int heartbeat = static_cast<int>(std::clamp<long long>(options.heartbeat.count(), 0, 65535));
  const amqp_rpc_reply_t login = amqp_login_with_properties(
      state_, endpoint.vhost.c_str(), 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat, &properties, AMQP_SASL_METHOD_PLAIN,
      endpoint.username.c_str(), endpoint.password.reveal().c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    std::string detail = describe_reply(login);
    if (login.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        login.library_error == AMQP_STATUS_CONNECTION_CLOSED)
      detail += " (RabbitMQ does this when the username or password is wrong)";
    return fail(errc::login_failed,
                "cannot log in to the broker at " + where_ + " as '" + endpoint.username + "': " + detail);
  }
  // The broker may have lowered our heartbeat; rabbitmq-c keeps the agreed value.
  heartbeat_ = std::chrono::seconds(amqp_get_heartbeat(state_));
  note_received();

  amqp_channel_open(state_, 1);
  auto opened = check_reply(amqp_get_rpc_reply(state_), errc::channel_closed, "cannot open a channel on " + where_);
  if (!opened) abandon();
  return opened;
}

core::Result<void> Connection::open_channel(amqp_channel_t ch) {
  amqp_channel_open(state_, ch);
  return check_reply(amqp_get_rpc_reply(state_), errc::channel_closed,
                     "cannot open channel " + std::to_string(ch) + " on " + where_);
}

core::Result<void> Connection::reopen_after_channel_error(amqp_channel_t ch) {
  amqp_channel_close_ok_t ok{};
  if (int rc = amqp_send_method(state_, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok); rc != AMQP_STATUS_OK) return lost(rc);
  return open_channel(ch);
}

namespace {
bool precondition_failed(const amqp_rpc_reply_t& reply) {
  if (reply.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || reply.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
    return false;
  return static_cast<const amqp_channel_close_t*>(reply.reply.decoded)->reply_code == AMQP_PRECONDITION_FAILED;
}
}  // namespace

core::Result<void> Connection::declare_queue(amqp_channel_t ch, const std::string& name, std::string_view type,
                                             std::string* note) {
  const bool quorum = type == "quorum";
  amqp_table_entry_t queue_type{};
  queue_type.key = amqp_cstring_bytes("x-queue-type");
  queue_type.value.kind = AMQP_FIELD_KIND_UTF8;
  queue_type.value.value.bytes = amqp_cstring_bytes("quorum");
  // Classic: no arguments at all, as before there was a choice, so that
  // queues declared by earlier versions stay equivalent.
  const amqp_table_t arguments = quorum ? amqp_table_t{1, &queue_type} : amqp_empty_table;
  amqp_queue_declare(state_, ch, to_bytes(name), 0, 1, 0, 0, arguments);
  amqp_rpc_reply_t reply = amqp_get_rpc_reply(state_);
  if (precondition_failed(reply)) {
    // It exists with other arguments (a control plane's DLX, another type): use it as it is.
    const std::string why = describe_reply(reply);
    if (note && quorum && why.find("x-queue-type") != std::string::npos)
      *note = "queue '" + name + "' exists on " + where_ + " as another type than quorum (" + why +
              "): it is used as it is, not replicated as a quorum queue";
    if (auto reopened = reopen_after_channel_error(ch); !reopened)
      return reopened.error().with_context("cannot reopen the channel after declaring queue '" + name + "'");
    amqp_queue_declare(state_, ch, to_bytes(name), 1, 0, 0, 0, amqp_empty_table);
    reply = amqp_get_rpc_reply(state_);
  }
  return check_reply(reply, errc::declare_failed,
                     "cannot declare " + std::string(quorum ? "quorum " : "") + "queue '" + name + "' on " + where_);
}

core::Result<void> Connection::declare_exchange(amqp_channel_t ch, const std::string& name, const std::string& type) {
  amqp_exchange_declare(state_, ch, to_bytes(name), to_bytes(type), 0, 1, 0, 0, amqp_empty_table);
  return check_reply(amqp_get_rpc_reply(state_), errc::declare_failed,
                     "cannot declare " + type + " exchange '" + name + "' on " + where_);
}

core::Result<void> Connection::bind_queue(amqp_channel_t ch, const std::string& queue, const std::string& exchange,
                                          const std::string& key) {
  amqp_queue_bind(state_, ch, to_bytes(queue), to_bytes(exchange), to_bytes(key), amqp_empty_table);
  return check_reply(amqp_get_rpc_reply(state_), errc::declare_failed,
                     "cannot bind queue '" + queue + "' to exchange '" + exchange + "'");
}

core::Result<void> Connection::confirm_select(amqp_channel_t ch) {
  amqp_confirm_select(state_, ch);
  return check_reply(amqp_get_rpc_reply(state_), errc::channel_closed,
                     "cannot enable publisher confirms on " + where_);
}

core::Error Connection::lost(std::string_view detail) const {
  return {errc::connection_lost, "lost the connection to " + where_ + ": " + std::string(detail)};
}

core::Error Connection::lost(int status) const { return lost(amqp_error_string2(status)); }

void Connection::close() noexcept {
  send_close();
  abandon();
}

void Connection::send_close() noexcept {
  if (state_) amqp_connection_close(state_, AMQP_REPLY_SUCCESS);
}

void Connection::abandon() noexcept {
  if (!state_) return;
  amqp_destroy_connection(state_);
  state_ = nullptr;
  heartbeat_ = std::chrono::seconds(0);
}

core::Result<void> closed_by_broker(Connection& conn, const amqp_frame_t& frame) {
  if (frame.frame_type != AMQP_FRAME_METHOD) return {};
  if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_channel_close_t*>(frame.payload.method.decoded);
    return core::Error{errc::channel_closed, "the broker at " + conn.where() + " closed channel " +
                                                 std::to_string(frame.channel) + " (" + std::to_string(m->reply_code) +
                                                 " " + std::string(to_view(m->reply_text)) + ")"};
  }
  if (frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    const auto* m = static_cast<const amqp_connection_close_t*>(frame.payload.method.decoded);
    amqp_connection_close_ok_t ok{};
    amqp_send_method(conn.get(), 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
    return core::Error{errc::connection_lost, "the broker at " + conn.where() + " closed the connection (" +
                                                  std::to_string(m->reply_code) + " " +
                                                  std::string(to_view(m->reply_text)) + ")"};
  }
  return {};
}

std::chrono::milliseconds Backoff::next() noexcept {
  current_ = current_.count() == 0 ? initial_ : std::min(current_ * 2, max_);
  return current_;
}

}  // namespace blacktree::amqp::detail
