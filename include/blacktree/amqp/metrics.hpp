// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The AMQP adapters' counters in the Prometheus text format, to append to
// core::prometheus::PrometheusMetrics::render() at /metrics.

#include <blacktree/amqp/event_publisher.hpp>
#include <blacktree/amqp/job_source.hpp>
#include <blacktree/amqp/status_sink.hpp>

#include <string>

namespace blacktree::amqp {

/// blacktree_amqp_statuses_returned_total, blacktree_amqp_dead_letters_returned_total
/// (alert when either grows: a status or dead letter no queue takes, its job
/// held unacked), blacktree_amqp_messages_too_large_total, and per
/// connection (`connection` = source, status, events)
/// blacktree_amqp_connects_total and blacktree_amqp_connected.
std::string prometheus_text(const AmqpSourceStats& source, const AmqpSinkStats& sink, const AmqpEventStats& events);

}  // namespace blacktree::amqp
