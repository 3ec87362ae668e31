// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/metrics.hpp>

#include <blacktree/core/prometheus.hpp>

#include <cstdint>

namespace blacktree::amqp {

std::string prometheus_text(const AmqpSourceStats& source, const AmqpSinkStats& sink, const AmqpEventStats& events) {
  core::prometheus::TextWriter out;
  out.counter("blacktree_amqp_statuses_returned_total",
              "Statuses the broker returned because no queue took them; each is retried and its job stays unacked.",
              sink.returned);
  out.counter("blacktree_amqp_dead_letters_returned_total",
              "Dead letters the broker returned because no queue took them; each is retried, its original held.",
              source.dead_letters_returned);
  out.counter("blacktree_amqp_events_coalesced_total",
              "Bare phase changes not published because a later event of the same job went in the same batch.",
              events.coalesced);
  out.counter("blacktree_amqp_messages_too_large_total",
              "Messages over the size limit, dead-lettered without their body.", source.too_large);
  const struct {
    const char* name;
    std::uint64_t connects;
    bool connected;
  } connections[] = {{"source", source.connects, source.connected},
                     {"status", sink.connects, sink.connected},
                     {"events", events.connects, events.connected}};
  out.family("blacktree_amqp_connects_total", "counter", "Connections to the broker established.");
  for (const auto& c : connections) out.sample("blacktree_amqp_connects_total", {{"connection", c.name}}, c.connects);
  out.family("blacktree_amqp_connected", "gauge", "1 while the connection is up.");
  for (const auto& c : connections)
    out.sample("blacktree_amqp_connected", {{"connection", c.name}}, std::uint64_t{c.connected ? 1u : 0u});
  return std::move(out).text();
}

}  // namespace blacktree::amqp
