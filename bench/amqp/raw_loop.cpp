// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The baseline: what one thread of plain rabbitmq-c does with the same
// guarantee (a job is acked only once its status is confirmed), pipelined
// over a window of `prefetch` jobs.

#include "bench.hpp"

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

namespace blacktree::bench::amqp {
namespace {

void check(const amqp_rpc_reply_t& reply, const char* what) {
  if (reply.reply_type != AMQP_RESPONSE_NORMAL)
    throw std::runtime_error(std::string(what) + " failed (reply type " + std::to_string(reply.reply_type) + ")");
}

amqp_connection_state_t connect(int port) {
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (amqp_socket_open(socket, "127.0.0.1", port) != AMQP_STATUS_OK)
    throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
  check(amqp_login(conn, "/", 0, AMQP_DEFAULT_FRAME_SIZE, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"), "login");
  amqp_channel_open(conn, 1);
  check(amqp_get_rpc_reply(conn), "channel.open");
  return conn;
}

void disconnect(amqp_connection_state_t conn) {
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
}

amqp_basic_properties_t persistent_json() {
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
  props.delivery_mode = 2;
  props.content_type = amqp_cstring_bytes("application/json");
  return props;
}

// Reads frames until every publish up to `seq` is confirmed; `confirmed` is the highest so far.
void await_confirms(amqp_connection_state_t conn, std::uint64_t seq, std::uint64_t& confirmed) {
  while (confirmed < seq) {
    amqp_frame_t frame{};
    if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) throw std::runtime_error("lost the connection");
    if (frame.frame_type != AMQP_FRAME_METHOD) continue;
    if (frame.payload.method.id == AMQP_BASIC_NACK_METHOD) throw std::runtime_error("the broker nacked a publish");
    if (frame.payload.method.id != AMQP_BASIC_ACK_METHOD) continue;
    const auto* ack = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
    confirmed = std::max(confirmed, ack->delivery_tag);
  }
}

}  // namespace

void prepublish(const Config& config, const std::string& queue, std::size_t n) {
  amqp_connection_state_t conn = connect(config.port);
  amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue.c_str()), 0, 1, 0, 0, amqp_empty_table);
  check(amqp_get_rpc_reply(conn), "queue.declare");
  amqp_confirm_select(conn, 1);
  check(amqp_get_rpc_reply(conn), "confirm.select");
  const amqp_basic_properties_t props = persistent_json();
  std::uint64_t seq = 0, confirmed = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string body = R"({"jobId":"bench-)" + std::to_string(i) +
                             R"(","repoUrl":"octo/hello","branch":"main","dockerfilePath":"Dockerfile",)"
                             R"("contextDir":".","imageName":"registry.example/hello:1","githubToken":"t"})";
    amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue.c_str()), 0, 0, &props,
                       amqp_bytes_t{body.size(), const_cast<char*>(body.data())});
    if (++seq % 1000 == 0) await_confirms(conn, seq, confirmed);
    amqp_maybe_release_buffers(conn);
  }
  await_confirms(conn, seq, confirmed);
  disconnect(conn);
}

void delete_queues(const Config& config, const std::string& stem) {
  amqp_connection_state_t conn = connect(config.port);
  for (const char* suffix : {".raw.execute", ".raw.status", ".bt.execute", ".bt.status", ".bt.execute.dlq"}) {
    const std::string name = stem + suffix;
    amqp_queue_delete(conn, 1, amqp_cstring_bytes(name.c_str()), 0, 0);
    check(amqp_get_rpc_reply(conn), "queue.delete");
  }
  disconnect(conn);
}

double run_raw_loop(const Config& config, const std::string& queue, const std::string& status_queue) {
  amqp_connection_state_t conn = connect(config.port);
  for (const std::string* name : {&queue, &status_queue}) {  // durable, as prepublish declares the job queue
    amqp_queue_declare(conn, 1, amqp_cstring_bytes(name->c_str()), 0, 1, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(conn), "queue.declare");
  }
  // Statuses go out on channel 2 in confirm mode; jobs come in on channel 1.
  amqp_channel_open(conn, 2);
  check(amqp_get_rpc_reply(conn), "channel.open");
  amqp_confirm_select(conn, 2);
  check(amqp_get_rpc_reply(conn), "confirm.select");
  amqp_basic_qos(conn, 1, 0, static_cast<std::uint16_t>(config.window), 0);
  check(amqp_get_rpc_reply(conn), "basic.qos");
  amqp_basic_consume(conn, 1, amqp_cstring_bytes(queue.c_str()), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
  check(amqp_get_rpc_reply(conn), "basic.consume");

  const amqp_basic_properties_t props = persistent_json();
  std::map<std::uint64_t, std::uint64_t> pending;  // status publish seq -> job delivery tag
  std::uint64_t seq = 0;
  std::size_t done = 0;
  const auto start = std::chrono::steady_clock::now();
  while (done < config.jobs) {
    amqp_maybe_release_buffers(conn);
    amqp_envelope_t envelope{};
    const amqp_rpc_reply_t reply = amqp_consume_message(conn, &envelope, nullptr, 0);
    if (reply.reply_type == AMQP_RESPONSE_NORMAL) {
      if (config.rate > 0) {  // paced: the broker's cost per job at a given rate (bench/e2e/run.py)
        std::this_thread::sleep_until(
            start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(static_cast<double>(seq) / config.rate)));
      }
      const std::string status = R"({"jobId":"x","success":true,"logs":"","imageUrl":"","error":""})";
      // The job's correlation id, if it has one, names it on the status (the
      // latency benchmark matches them by it; the loop parses no JSON).
      amqp_basic_properties_t status_props = props;
      if (envelope.message.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        status_props._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        status_props.correlation_id = envelope.message.properties.correlation_id;
      }
      amqp_basic_publish(conn, 2, amqp_empty_bytes, amqp_cstring_bytes(status_queue.c_str()), 0, 0, &status_props,
                         amqp_bytes_t{status.size(), const_cast<char*>(status.data())});
      pending.emplace(++seq, envelope.delivery_tag);
      amqp_destroy_envelope(&envelope);
      continue;
    }
    if (reply.reply_type != AMQP_RESPONSE_LIBRARY_EXCEPTION || reply.library_error != AMQP_STATUS_UNEXPECTED_STATE)
      throw std::runtime_error("consume failed");
    amqp_frame_t frame{};
    if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) throw std::runtime_error("lost the connection");
    if (frame.frame_type != AMQP_FRAME_METHOD || frame.payload.method.id != AMQP_BASIC_ACK_METHOD) continue;
    const auto* ack = static_cast<const amqp_basic_ack_t*>(frame.payload.method.decoded);
    auto end = pending.upper_bound(ack->delivery_tag);
    if (!ack->multiple) {
      // A single confirm: settle just that one (confirms may arrive out of order).
      auto it = pending.find(ack->delivery_tag);
      if (it == pending.end()) continue;
      amqp_basic_ack(conn, 1, it->second, 0);
      pending.erase(it);
      ++done;
      continue;
    }
    for (auto it = pending.begin(); it != end; ++it, ++done) amqp_basic_ack(conn, 1, it->second, 0);
    pending.erase(pending.begin(), end);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  disconnect(conn);
  return seconds;
}

}  // namespace blacktree::bench::amqp
