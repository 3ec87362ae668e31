// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// blacktree::amqp, the RabbitMQ adapter (rabbitmq-c): everything at once.
//   AmqpOptions         where to connect, what to declare (options.hpp)
//   AmqpJobSource       core::JobSource on execute.queue (job_source.hpp)
//   AmqpStatusSink      core::StatusSink on status.queue (status_sink.hpp)
//   AmqpEventPublisher  best-effort progress events (event_publisher.hpp)
// None of these headers includes amqp.h.

#include <blacktree/amqp/event_publisher.hpp>
#include <blacktree/amqp/job_source.hpp>
#include <blacktree/amqp/options.hpp>
#include <blacktree/amqp/status_sink.hpp>
