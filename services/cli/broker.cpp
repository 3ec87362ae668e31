// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The broker connection of the commands that publish (submit, cancel): one
// way to open it and to say what went wrong, in the commands' flags.

#include "commands.hpp"

#include <blacktree/amqp/error.hpp>

#include <fmt/format.h>

namespace blacktree::cli {
namespace {

std::string open_hint(const core::Error& error) {
  if (error.code() == amqp::errc::connect_failed) return ". Is RabbitMQ running there? (set --mq-url or MQ_URL)";
  if (error.code() == amqp::errc::login_failed) return ". Check the credentials and vhost in --mq-url / MQ_URL";
  if (error.code() == amqp::errc::tls_setup_failed) return " (--mq-tls-ca-file, --mq-tls-cert-file, --mq-tls-key-file)";
  return "";
}

}  // namespace

int open_broker(amqp::AmqpClient& client, amqp::AmqpOptions options, std::uint32_t connect_timeout_s) {
  options.connect_timeout = std::chrono::seconds(connect_timeout_s);
  auto opened = client.open(options, "cli");
  if (opened) return exit_ok;
  if (opened.error().code() == amqp::errc::invalid_url) {
    fmt::print(stderr, "blacktree: error: {} (set --mq-url or MQ_URL)\n", opened.error().message());
    return exit_usage;
  }
  fmt::print(stderr, "blacktree: error: {}{}\n", opened.error().message(), open_hint(opened.error()));
  return exit_unreachable;
}

}  // namespace blacktree::cli
