// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// blacktree::amqp, the RabbitMQ adapter (rabbitmq-c): everything at once.
//   AmqpOptions         where to connect, what to declare (options.hpp)
//   AmqpJobSource       core::JobSource on execute.queue (job_source.hpp)
//   AmqpStatusSink      core::StatusSink on status.queue (status_sink.hpp)
//   AmqpEventPublisher  best-effort progress events (event_publisher.hpp)
//   AmqpClient          a blocking client for short-lived programs (client.hpp)
//   amqp::errc          the adapter's error codes (error.hpp)
// None of these headers includes amqp.h.
//
// Wiring them into a Dispatcher (the orchestrator's shape):
//
//   AmqpOptions options;                       // options.url = MQ_URL, queue names...
//   AmqpJobSource source(io.get_executor(), options);
//   AmqpStatusSink sink(io.get_executor(), options);
//   AmqpEventPublisher events(options);
//
//   struct Observer : core::DispatcherObserver {   // at namespace scope
//     static constexpr bool wants_progress = true;
//     AmqpEventPublisher* events;
//     void on_progress(const core::ProgressEvent& e) { events->publish(e); }  // any thread, never blocks
//     void on_finished(const core::Job& job, const core::JobResult& r) {
//       events->publish_result({job.id, r.worker_id, core::Phase::finished, {}}, r);
//     }
//   };
//   core::Dispatcher<AmqpJobSource, Transport, AmqpStatusSink, core::WorkerPool, Observer>
//       dispatcher(io.get_executor(), source, transport, sink, pool, {}, Observer{{}, &events});
//   dispatcher.start();          // it calls source.set_prefetch(free capacity) itself
//
//   // /healthz: source.connected() && sink.connected(); details: last_error().
//   // SIGTERM: source.cancel_consumer(); dispatcher.async_stop(deadline, ...);
//   //          then source.stop(); sink.stop(); events.stop();
//
// Lifetimes: the io_context (executor) must outlive the source and sink, and
// they must outlive the Dispatcher.

#include <blacktree/amqp/client.hpp>
#include <blacktree/amqp/error.hpp>
#include <blacktree/amqp/event_publisher.hpp>
#include <blacktree/amqp/job_source.hpp>
#include <blacktree/amqp/metrics.hpp>
#include <blacktree/amqp/options.hpp>
#include <blacktree/amqp/peers.hpp>
#include <blacktree/amqp/status_sink.hpp>
