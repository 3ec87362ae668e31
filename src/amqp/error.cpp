// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/error.hpp>

#include <blacktree/core/error_category.hpp>

namespace blacktree::amqp {
namespace {

std::string_view describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_url: return "invalid broker URL";
    case errc::tls_setup_failed: return "cannot set up TLS for the broker";
    case errc::connect_failed: return "cannot connect to the broker";
    case errc::login_failed: return "the broker refused the login";
    case errc::channel_closed: return "the broker closed the channel";
    case errc::connection_lost: return "lost the connection to the broker";
    case errc::declare_failed: return "cannot declare a queue or exchange";
    case errc::consume_failed: return "cannot consume from the queue";
    case errc::publish_failed: return "cannot publish";
    case errc::publish_nacked: return "the broker refused the message";
    case errc::unroutable: return "no queue took the message";
    case errc::timed_out: return "the broker did not answer in time";
    case errc::invalid_option: return "invalid broker option";
  }
  return {};
}

}  // namespace

const std::error_category& error_category() noexcept {
  // One object for the program, so that error_codes compare equal; it holds no state.
  static const core::EnumErrorCategory<errc> category("blacktree.amqp", describe);
  return category;
}

}  // namespace blacktree::amqp
