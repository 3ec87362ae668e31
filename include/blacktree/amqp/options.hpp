// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Where the RabbitMQ adapter connects and what it declares. One AmqpOptions
// serves the job source, the status sink and the event publisher; each opens
// its own connection with it. Defaults match the seed design, so a control
// plane written for it works unchanged.

#include <blacktree/amqp/error.hpp>
#include <blacktree/core/job.hpp>
#include <blacktree/core/result.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::amqp {

/// TLS settings, used when the URL's scheme is `amqps`.
struct TlsOptions {
  std::string ca_file;           ///< PEM CA bundle; empty: OpenSSL's default trust store
  bool verify_peer = true;       ///< check the broker's certificate chain
  bool verify_hostname = true;   ///< check that the certificate names the URL's host
  std::string cert_file;         ///< client certificate (PEM), for mutual TLS; optional
  std::string key_file;          ///< its private key (PEM); required with cert_file
};

enum class LogLevel : std::uint8_t { debug, info, warning, error };
/// Receives what the adapters have to say (a lost connection and why, a
/// status the broker returned), from their connection threads: it must be
/// thread-safe. Messages never contain a password.
using LogFunction = std::function<void(LogLevel, std::string_view)>;

struct AmqpOptions {
  /// The seed's MQ_URL: `amqp[s]://user:password@host:port/vhost` (RFC 3986
  /// escapes allowed). An empty path or a bare "/" is the vhost "/", as in
  /// the Go client the seed used; "%2f" spells "/" explicitly.
  ///
  /// A RabbitMQ cluster: several URLs separated by commas, one per node
  /// (`amqp://u:p@node1:5672/,amqp://u:p@node2:5672/`; spaces around the
  /// commas are ignored). Each connection attempt goes to the next address in
  /// turn, starting with the first: after a failed attempt, or once a
  /// connection is lost, the next one is to the next node.
  std::string url = "amqp://guest:guest@localhost:5672/";
  /// When set, override what the URL says.
  std::optional<std::string> vhost;
  std::optional<std::string> username;
  std::optional<core::Secret> password;
  TlsOptions tls;

  /// AMQP heartbeat: a broker that says nothing for about twice this long is
  /// taken as gone and the connection is re-established. 0 disables it.
  std::chrono::seconds heartbeat{30};
  /// Bound on TCP connect + AMQP handshake, and on each synchronous AMQP
  /// request (declare, qos, consume).
  std::chrono::milliseconds connect_timeout{5000};
  /// Delay before reconnecting after a failure; doubles up to the maximum and
  /// resets once a connection has been established.
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{10000};
  /// Shown in the broker's management UI for each connection ("<name> source").
  std::string connection_name = "blacktree";
  /// Where connection errors (once per distinct error, not per retry), the
  /// reconnect after them, and returned statuses or dead letters are
  /// reported. Empty: nowhere (last_error() and the stats still say).
  LogFunction log;
  /// Also report, at LogLevel::debug, what the job source does with each
  /// delivery: its tag and job as it arrives, and every ack frame it sends
  /// (a multiple ack says how far it reaches). For tracing a job through
  /// reconnects; a line per delivery, so off by default.
  bool log_deliveries = false;

  /// Declare (durable, idempotently) the queues and exchanges below on every
  /// connect. A queue that already exists with other arguments (e.g. a
  /// control plane's x-dead-letter-exchange) is used as it is.
  bool declare = true;
  /// The type the queues below (jobs, cancels, statuses, dead letters) are
  /// declared with: "classic" (no arguments, as before) or "quorum" (durable,
  /// `x-queue-type: quorum`: replicated across a cluster's nodes, and a node
  /// that goes away loses nothing confirmed). It applies only to queues the
  /// adapters create; one that exists is used as it is (logged when it is
  /// not the type asked for). Anything else: the adapters' constructors throw.
  std::string queue_type = "classic";

  // --- jobs ---
  std::string execute_queue = "execute.queue";
  /// Until set_prefetch(n > 0) is called the source consumes nothing (the
  /// Dispatcher calls it as soon as it knows its capacity).
  std::uint16_t initial_prefetch = 0;
  /// A higher prefetch adds a consumer for the difference; a lower one at
  /// once cancels consumers that hold no unsettled delivery. One that holds
  /// deliveries is cancelled only when the surplus has lasted this long:
  /// meanwhile the source may buffer up to the difference more than asked.
  /// (Cancelling consumers that hold deliveries is what RabbitMQ 3.10 can
  /// get wrong for quorum queues: see operations.md, "Known broker issue".)
  std::chrono::milliseconds consumer_shrink_delay{2000};
  /// A message whose body is larger is not read: the source discards its
  /// body as it arrives (reading it from the broker's content header) and
  /// hands it on as invalid, to be dead-lettered without its body.
  std::size_t max_message_size = std::size_t{1} << 20;

  /// Cancel requests, {"jobId": "...", "reason": "..."}: the orchestrator
  /// reads them with an AmqpJobSource of its own whose execute_queue is this
  /// (an invalid one is dead-lettered like an invalid job).
  std::string cancel_queue = "cancel.queue";

  // --- dead letters (invalid jobs) ---
  /// Invalid jobs are published here, persistent and confirmed, with the
  /// header `x-blacktree-reason`, and only then acked on execute_queue.
  std::string dead_letter_exchange = "blacktree.dead-letter";
  std::string dead_letter_exchange_type = "fanout";
  std::string dead_letter_queue = "execute.queue.dead-letter";  ///< bound to the exchange; empty: none

  // --- statuses ---
  std::string status_queue = "status.queue";
  std::string status_exchange;     ///< "" is the default exchange
  std::string status_routing_key;  ///< empty: status_queue

  // --- progress events ---
  std::string events_exchange = "blacktree.events";
  std::string events_exchange_type = "topic";
  std::string events_routing_prefix = "job.";  ///< routing key: prefix + jobId
  /// Events held while the broker is slow or away; beyond it they are dropped (and counted).
  std::size_t events_buffer = 10000;
  /// Events go out in batches: the first event into an empty buffer waits
  /// this long for others, and a batch leaves out the bare phase changes a
  /// later event of the same job supersedes (see AmqpEventPublisher). 0:
  /// each event goes out as soon as the connection thread wakes for it.
  std::chrono::milliseconds events_batch_window{10};

  // --- orchestrators sharing execute_queue (AmqpPeers) ---
  /// Fanout exchange on which they tell each other which jobs still run
  /// under them after their deliveries went back to the queue.
  std::string peers_exchange = "blacktree.peers";
  /// How often each says it (while it has anything to say).
  std::chrono::milliseconds peers_interval{1000};
  /// The routing key statuses are published with.
  const std::string& effective_status_routing_key() const noexcept {
    return status_routing_key.empty() ? status_queue : status_routing_key;
  }
};

/// The broker an AmqpOptions points at, parsed. `describe()` never contains the password.
struct AmqpEndpoint {
  std::string host;
  int port = 5672;
  std::string vhost = "/";
  std::string username;
  core::Secret password;
  bool tls = false;

  /// "amqp://host:5672/vhost" (no credentials), for messages a person reads.
  std::string describe() const;
};

/// Parses every address of `options.url` (one, or several separated by
/// commas) and applies the overrides to each. Fails with errc::invalid_url
/// and a message that names the address by its position and never contains
/// a password (e.g. "invalid MQ_URL, address 2 of 3 (amqp://...@node2:0/):
/// the port must be 1 to 65535").
core::Result<std::vector<AmqpEndpoint>> resolve_endpoints(const AmqpOptions& options);

/// The first of resolve_endpoints(): where a single-node setup connects.
core::Result<AmqpEndpoint> resolve_endpoint(const AmqpOptions& options);

/// "amqp://node1:5672/,amqp://node2:5672/": the addresses, without credentials.
std::string describe(const std::vector<AmqpEndpoint>& endpoints);

/// Checks what resolve_endpoints() does not (queue_type). Fails with
/// errc::invalid_option naming the field and the rule.
core::Result<void> check_options(const AmqpOptions& options);

}  // namespace blacktree::amqp
