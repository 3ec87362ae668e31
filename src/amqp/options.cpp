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

std::string describe(const std::vector<AmqpEndpoint>& endpoints) {
  std::string out;
  for (const auto& endpoint : endpoints) {
    if (!out.empty()) out += ',';
    out += endpoint.describe();
  }
  return out;
}

namespace {

constexpr std::string_view blanks = " \t\r\n";

std::string_view trim(std::string_view s) {
  const auto first = s.find_first_not_of(blanks);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(blanks) - first + 1);
}

// An address as an error message may show it: everything up to the last '@'
// after the scheme (user and password, even one that holds a stray '/') is
// replaced by "...@".
std::string shown(std::string_view url) {
  const auto scheme_end = url.find("://");
  const std::string_view scheme = scheme_end == std::string_view::npos ? "" : url.substr(0, scheme_end + 3);
  std::string_view rest = scheme_end == std::string_view::npos ? url : url.substr(scheme_end + 3);
  std::string out(scheme);
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    out += "...@";
    rest = rest.substr(at + 1);
  }
  out += rest;
  return out;
}

// One address; the error is the rule it breaks, for the caller to put in context.
core::Result<AmqpEndpoint> parse_one(std::string_view url, const AmqpOptions& options) {
  auto fail = [](std::string message) { return core::Error{errc::invalid_url, std::move(message)}; };
  if (!url.starts_with("amqp://") && !url.starts_with("amqps://"))
    return fail("it must start with amqp:// or amqps://");
  // amqp_parse_url writes into its argument and points the result into it.
  std::vector<char> buffer(url.begin(), url.end());
  buffer.push_back('\0');
  amqp_connection_info info{};
  amqp_default_connection_info(&info);
  if (amqp_parse_url(buffer.data(), &info) != AMQP_STATUS_OK)
    return fail("expected amqp[s]://user:password@host:port/vhost");
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
  if (endpoint.host.empty()) return fail("no host");
  if (endpoint.port <= 0 || endpoint.port > 65535) return fail("the port must be 1 to 65535");
  return endpoint;
}

}  // namespace

core::Result<std::vector<AmqpEndpoint>> resolve_endpoints(const AmqpOptions& options) {
  std::vector<std::string_view> urls;
  for (std::string_view rest = options.url;;) {
    const auto comma = rest.find(',');
    urls.push_back(trim(rest.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  const bool several = urls.size() > 1;
  std::vector<AmqpEndpoint> endpoints;
  endpoints.reserve(urls.size());
  for (std::size_t i = 0; i < urls.size(); ++i) {
    // Never echo a whole address: it may carry a password.
    const std::string which =
        several ? "invalid MQ_URL, address " + std::to_string(i + 1) + " of " + std::to_string(urls.size())
                : std::string("invalid MQ_URL");
    if (urls[i].empty()) {
      return core::Error{errc::invalid_url,
                         which + (several ? " is empty: separate the nodes' URLs with single commas"
                                          : ": it is empty; expected amqp[s]://user:password@host:port/vhost")};
    }
    auto endpoint = parse_one(urls[i], options);
    if (!endpoint) return endpoint.error().with_context(which + " (" + shown(urls[i]) + ")");
    endpoints.push_back(std::move(*endpoint));
  }
  if (endpoints.front().tls || several) {
    for (const auto& endpoint : endpoints) {
      if (endpoint.tls && !options.tls.cert_file.empty() && options.tls.key_file.empty())
        return core::Error{errc::invalid_url,
                           "amqps client certificate " + options.tls.cert_file + " given without tls.key_file"};
    }
  }
  return endpoints;
}

core::Result<AmqpEndpoint> resolve_endpoint(const AmqpOptions& options) {
  auto endpoints = resolve_endpoints(options);
  if (!endpoints) return std::move(endpoints).error();
  return std::move(endpoints->front());
}

core::Result<void> check_options(const AmqpOptions& options) {
  if (options.queue_type != "classic" && options.queue_type != "quorum")
    return core::Error{errc::invalid_option,
                       "queue_type '" + options.queue_type + "': it must be classic or quorum"};
  return {};
}

namespace detail {

Brokers::Brokers(std::vector<AmqpEndpoint> endpoints) : endpoints_(std::move(endpoints)) {
  if (endpoints_.empty()) throw std::invalid_argument("amqp: no broker address");
}

const AmqpEndpoint& Brokers::next() noexcept {
  const AmqpEndpoint& endpoint = endpoints_[next_];
  next_ = (next_ + 1) % endpoints_.size();
  return endpoint;
}

core::Result<Brokers> resolve_brokers(const AmqpOptions& options) {
  auto endpoints = resolve_endpoints(options);
  if (!endpoints) return std::move(endpoints).error();
  return Brokers(std::move(*endpoints));
}

Brokers resolve_or_throw(const AmqpOptions& options) {
  if (auto checked = check_options(options); !checked) throw std::invalid_argument(checked.error().message());
  auto brokers = resolve_brokers(options);
  if (!brokers) throw std::invalid_argument(brokers.error().message());
  return std::move(*brokers);
}

}  // namespace detail
}  // namespace blacktree::amqp
