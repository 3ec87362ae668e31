// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The broker the ctest fixture started (tests/support/rabbitmq.sh), and a
// plain blocking rabbitmq-c client playing the control plane: it publishes
// jobs and reads statuses and dead letters the way any AMQP client would.

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <catch2/catch.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace blacktree::amqp::test {

using namespace std::chrono_literals;

inline std::string env(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) throw std::runtime_error(std::string(name) + " is not set (run through ctest)");
  return value;
}

/// The fixture's broker directory (BLACKTREE_AMQP_BROKER_DIR).
inline std::string broker_dir() { return env("BLACKTREE_AMQP_BROKER_DIR"); }

inline int broker_port() {
  std::ifstream in(broker_dir() + "/port");
  int port = 0;
  if (!(in >> port)) throw std::runtime_error("no port in " + broker_dir() + "/port: did the fixture start?");
  return port;
}

/// The amqps port (the fixture starts the broker with RABBITMQ_TLS=1).
inline int broker_tls_port() {
  std::ifstream in(broker_dir() + "/tls_port");
  int port = 0;
  if (!(in >> port)) throw std::runtime_error("no " + broker_dir() + "/tls_port: start the broker with RABBITMQ_TLS=1");
  return port;
}

inline std::string broker_url() { return "amqp://guest:guest@127.0.0.1:" + std::to_string(broker_port()) + "/"; }

/// Runs `rabbitmq.sh <command> <dir> <args>`; returns its exit status and stdout.
inline int run_script(const std::string& command, const std::string& args, std::string* out = nullptr) {
  const std::string line = std::string(BLACKTREE_RABBITMQ_SH) + " " + command + " '" + broker_dir() + "' " + args;
  FILE* pipe = ::popen(line.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buffer{};
  std::string text;
  while (std::size_t n = std::fread(buffer.data(), 1, buffer.size(), pipe)) text.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  if (out) *out = text;
  return status;
}

/// The rows `rabbitmqctl <command>` prints (run with --no-table-headers).
inline std::vector<std::string> ctl_rows(const std::string& command) {
  std::string out;
  if (run_script("ctl", command + " --no-table-headers", &out) != 0)
    throw std::runtime_error("rabbitmqctl " + command + " failed: " + out);
  std::vector<std::string> rows;
  std::size_t pos = 0;
  while (pos < out.size()) {
    const std::size_t eol = out.find('\n', pos);
    rows.push_back(out.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos));
    pos = eol == std::string::npos ? out.size() : eol + 1;
  }
  return rows;
}

/// `rabbitmqctl list_queues name <column>`, as a map from queue name to the column's text.
inline std::map<std::string, std::string> list_queues_text(const std::string& column) {
  std::map<std::string, std::string> result;
  for (const std::string& row : ctl_rows("list_queues name " + column)) {
    const std::size_t tab = row.find('\t');
    if (tab != std::string::npos) result[row.substr(0, tab)] = row.substr(tab + 1);
  }
  return result;
}

/// `rabbitmqctl list_queues name <column>`, as a map from queue name.
inline std::map<std::string, long> list_queues(const std::string& column) {
  std::map<std::string, long> result;
  for (const auto& [name, text] : list_queues_text(column)) result[name] = std::strtol(text.c_str(), nullptr, 10);
  return result;
}

/// How many consumers `queue` has, from `rabbitmqctl list_consumers` (its
/// `consumers` column says 0 for a quorum queue in RabbitMQ 3.10).
inline long consumers_of(const std::string& queue) {
  long n = 0;
  for (const std::string& row : ctl_rows("list_consumers queue_name")) n += row == queue;
  return n;
}

/// Closes, from the broker's side, every connection whose client-given name
/// is `name` (AmqpOptions::connection_name, a space, the role: "x source"),
/// as a node going away would. Returns how many it closed.
inline int close_connections_named(const std::string& name) {
  const std::string needle = "{\"connection_name\",\"" + name + "\"}";
  int closed = 0;
  for (const std::string& row : ctl_rows("list_connections pid client_properties")) {
    if (row.find(needle) == std::string::npos) continue;
    const std::string pid = row.substr(0, row.find('\t'));
    if (run_script("ctl", "close_connection '" + pid + "' 'closed by a test'") != 0)
      throw std::runtime_error("rabbitmqctl close_connection " + pid + " failed");
    ++closed;
  }
  return closed;
}

/// Names no other test uses, so tests need not clean up after each other.
inline std::string unique_name(const std::string& stem) {
  static std::mt19937_64 random{std::random_device{}()};
  return "test." + stem + "." + std::to_string(random() % 1000000000);
}

/// Checks `condition` every few milliseconds until it holds or `timeout`
/// passes. Only for state that offers nothing to wait on (a flag on another
/// thread, the broker's view of a queue).
inline bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

struct Message {
  std::string body;
  std::string routing_key;
  std::map<std::string, std::string> headers;  ///< string-valued headers
  std::string content_type;
  std::string message_id;
  int delivery_mode = 0;
  bool redelivered = false;
};

/// A blocking client on one channel. Every call REQUIREs success.
class Client {
 public:
  explicit Client(int port = broker_port()) {
    conn_ = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(conn_);
    timeval tv{10, 0};
    REQUIRE(amqp_socket_open_noblock(socket, "127.0.0.1", port, &tv) == AMQP_STATUS_OK);
    check(amqp_login(conn_, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
    amqp_channel_open(conn_, 1);
    check(amqp_get_rpc_reply(conn_), "channel.open");
    amqp_confirm_select(conn_, 1);
    check(amqp_get_rpc_reply(conn_), "confirm.select");
  }
  ~Client() {
    amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void declare_queue(const std::string& name) {
    amqp_queue_declare(conn_, 1, amqp_cstring_bytes(name.c_str()), 0, 1, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(conn_), "queue.declare " + name);
  }
  /// A durable quorum queue (RabbitMQ's replicated type), with more arguments if given.
  void declare_quorum_queue(const std::string& name, const std::map<std::string, std::string>& more = {}) {
    std::vector<amqp_table_entry_t> entries;
    auto add = [&](const std::string& key, const std::string& value) {
      amqp_table_entry_t e{};
      e.key = amqp_cstring_bytes(key.c_str());
      e.value.kind = AMQP_FIELD_KIND_UTF8;
      e.value.value.bytes = amqp_cstring_bytes(value.c_str());
      entries.push_back(e);
    };
    add("x-queue-type", "quorum");
    for (const auto& [key, value] : more) add(key, value);
    amqp_table_t args{static_cast<int>(entries.size()), entries.data()};
    amqp_queue_declare(conn_, 1, amqp_cstring_bytes(name.c_str()), 0, 1, 0, 0, args);
    check(amqp_get_rpc_reply(conn_), "queue.declare (quorum) " + name);
  }
  void delete_queue(const std::string& name) {
    amqp_queue_delete(conn_, 1, amqp_cstring_bytes(name.c_str()), 0, 0);
    check(amqp_get_rpc_reply(conn_), "queue.delete " + name);
  }
  /// Durable, as the services declare theirs.
  void declare_exchange(const std::string& name, const std::string& type) {
    amqp_exchange_declare(conn_, 1, amqp_cstring_bytes(name.c_str()), amqp_cstring_bytes(type.c_str()), 0, 1, 0, 0,
                          amqp_empty_table);
    check(amqp_get_rpc_reply(conn_), "exchange.declare " + name);
  }
  void bind(const std::string& queue, const std::string& exchange, const std::string& key) {
    amqp_queue_bind(conn_, 1, amqp_cstring_bytes(queue.c_str()), amqp_cstring_bytes(exchange.c_str()),
                    amqp_cstring_bytes(key.c_str()), amqp_empty_table);
    check(amqp_get_rpc_reply(conn_), "queue.bind");
  }
  /// Ready messages (not the unacknowledged ones).
  std::uint32_t ready(const std::string& queue) {
    auto* ok = amqp_queue_declare(conn_, 1, amqp_cstring_bytes(queue.c_str()), 1, 0, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(conn_), "queue.declare passive " + queue);
    return ok->message_count;
  }

  /// A persistent publish through the default exchange, confirmed by the broker.
  void publish(const std::string& queue, const std::string& body, const std::string& exchange = "") {
    amqp_basic_properties_t props{};
    props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    props.delivery_mode = 2;
    props.content_type = amqp_cstring_bytes("application/json");
    amqp_bytes_t bytes{body.size(), const_cast<char*>(body.data())};
    REQUIRE(amqp_basic_publish(conn_, 1, amqp_cstring_bytes(exchange.c_str()), amqp_cstring_bytes(queue.c_str()), 0,
                               0, &props, bytes) == AMQP_STATUS_OK);
    // Wait for the confirm, so the message is in the queue when this returns.
    for (;;) {
      amqp_frame_t frame{};
      timeval tv{10, 0};
      REQUIRE(amqp_simple_wait_frame_noblock(conn_, &frame, &tv) == AMQP_STATUS_OK);
      if (frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_ACK_METHOD) return;
      REQUIRE(frame.payload.method.id != AMQP_BASIC_NACK_METHOD);
    }
  }

  /// Takes one message off `queue` (auto-ack), waiting up to `timeout` for it.
  std::optional<Message> get(const std::string& queue, std::chrono::milliseconds timeout = 10s) {
    if (consuming_ != queue) {
      REQUIRE(consuming_.empty());  // one queue per client
      amqp_basic_consume(conn_, 1, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
      check(amqp_get_rpc_reply(conn_), "basic.consume " + queue);
      consuming_ = queue;
    }
    amqp_maybe_release_buffers(conn_);
    amqp_envelope_t envelope{};
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    const amqp_rpc_reply_t reply = amqp_consume_message(conn_, &envelope, &tv, 0);
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && reply.library_error == AMQP_STATUS_TIMEOUT)
      return std::nullopt;
    check(reply, "consume");
    Message m;
    m.body.assign(static_cast<char*>(envelope.message.body.bytes), envelope.message.body.len);
    m.routing_key.assign(static_cast<char*>(envelope.routing_key.bytes), envelope.routing_key.len);
    m.redelivered = envelope.redelivered != 0;
    const auto& p = envelope.message.properties;
    if (p._flags & AMQP_BASIC_DELIVERY_MODE_FLAG) m.delivery_mode = p.delivery_mode;
    if (p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
      m.content_type.assign(static_cast<char*>(p.content_type.bytes), p.content_type.len);
    if (p._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
      m.message_id.assign(static_cast<char*>(p.message_id.bytes), p.message_id.len);
    if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
      for (int i = 0; i < p.headers.num_entries; ++i) {
        const auto& e = p.headers.entries[i];
        if (e.value.kind != AMQP_FIELD_KIND_UTF8 && e.value.kind != AMQP_FIELD_KIND_BYTES) continue;
        m.headers[std::string(static_cast<char*>(e.key.bytes), e.key.len)] =
            std::string(static_cast<char*>(e.value.value.bytes.bytes), e.value.value.bytes.len);
      }
    }
    amqp_destroy_envelope(&envelope);
    return m;
  }

 private:
  void check(const amqp_rpc_reply_t& reply, const std::string& what) {
    INFO(what << ": reply type " << reply.reply_type << ", library error "
              << (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION ? amqp_error_string2(reply.library_error) : "-"));
    REQUIRE(reply.reply_type == AMQP_RESPONSE_NORMAL);
  }

  amqp_connection_state_t conn_ = nullptr;
  std::string consuming_;
};

}  // namespace blacktree::amqp::test
