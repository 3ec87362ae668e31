// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// blacktree::amqp's error codes. Fallible calls of the adapter return a
// core::Result whose core::Error carries one of these (branch on the code)
// and a message a person can act on (show that).

#include <string>
#include <system_error>

namespace blacktree::amqp {

enum class errc {
  invalid_url = 1,   ///< MQ_URL (or an override) cannot be used; the message says which part
  tls_setup_failed,  ///< a CA file, client certificate or key could not be used
  connect_failed,    ///< no TCP (or TLS) connection to the broker
  login_failed,      ///< the broker refused the handshake: credentials, vhost
  channel_closed,    ///< the broker closed a channel (a failed declare, a missing queue)
  connection_lost,   ///< the connection broke, or the broker closed it or missed its heartbeats
  declare_failed,    ///< a queue, exchange or binding could not be declared
  consume_failed,    ///< basic.qos, basic.consume or basic.cancel failed
  publish_failed,    ///< a message could not be written to the connection
  publish_nacked,    ///< the broker refused a published message (basic.nack)
  unroutable,        ///< no queue took a mandatory message (basic.return)
  timed_out,         ///< the broker did not answer in time
  invalid_option,    ///< an option other than the URL cannot be used (queue_type); the message names it
};

const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

}  // namespace blacktree::amqp

template <>
struct std::is_error_code_enum<blacktree::amqp::errc> : std::true_type {};
