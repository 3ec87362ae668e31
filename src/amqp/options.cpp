// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/amqp/options.hpp>

#include "connection_loop.hpp"

#include <amqp.h>

#include <stdexcept>
#include <utility>
#include <vector>

namespace blacktree::amqp {

std::string AmqpEndpoint::describe() const {
  std::string out = tls ? "amqps://" : "amqp://";
  const bool ipv6 = host.find(':') != std::string::npos;
  out += ipv6 ? "[" + host + "]" : host;
  out += ":" + std::to_string(port) + "/";
  // The default vhost "/" is written as the Go client reads it back: an empty path.
  if (vhost != "/") out += vhost;
  return out;
}

core::Result<AmqpEndpoint> resolve_endpoint(const AmqpOptions& options) {
  auto fail = [](std::string message) { return core::Error{errc::invalid_url, std::move(message)}; };
  const std::string& url = options.url;
  if (url.rfind("amqp://", 0) != 0 && url.rfind("amqps://", 0) != 0)
    return fail("invalid MQ_URL: it must start with amqp:// or amqps://");
  // amqp_parse_url writes into its argument and points the result into it.
  std::vector<char> buffer(url.begin(), url.end());
  buffer.push_back('\0');
  amqp_connection_info info{};
  amqp_default_connection_info(&info);
  if (amqp_parse_url(buffer.data(), &info) != AMQP_STATUS_OK) {
    // Never echo the URL: it may carry a password.
    return fail(std::string("invalid MQ_URL (") + (url.rfind("amqps", 0) == 0 ? "amqps" : "amqp") +
                "://...): expected amqp[s]://user:password@host:port/vhost");
  }
  AmqpEndpoint endpoint;
  endpoint.host = info.host ? info.host : "localhost";
  endpoint.port = info.port;
  endpoint.vhost = info.vhost ? info.vhost : "/";
  if (endpoint.vhost.empty()) endpoint.vhost = "/";  // "amqp://host/" means "/", as for the seed's Go client
  endpoint.username = info.user ? info.user : "guest";
  endpoint.password = core::Secret(info.password ? info.password : "guest");
  endpoint.tls = info.ssl != 0;
  if (options.vhost) endpoint.vhost = *options.vhost;
  if (options.username) endpoint.username = *options.username;
  if (options.password) endpoint.password = *options.password;
  if (endpoint.host.empty()) return fail("invalid MQ_URL: no host");
  if (endpoint.port <= 0 || endpoint.port > 65535) return fail("invalid MQ_URL: port out of range");
  if (endpoint.tls && !options.tls.cert_file.empty() && options.tls.key_file.empty())
    return fail("amqps client certificate " + options.tls.cert_file + " given without tls.key_file");
  return endpoint;
}

namespace detail {

AmqpEndpoint resolve_or_throw(const AmqpOptions& options) {
  auto endpoint = resolve_endpoint(options);
  if (!endpoint) throw std::invalid_argument(endpoint.error().message());
  return std::move(*endpoint);
}

}  // namespace detail
}  // namespace blacktree::amqp
