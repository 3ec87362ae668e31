// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Orchestrators sharing one job queue tell each other which jobs still run
// under them after their deliveries went back to the queue (a broker node
// went away with their connection), so that the orchestrator the broker
// redelivers such a job to waits for it instead of running it again.
//
//   blacktree::amqp::AmqpPeers peers(
//       options, orchestrator_id,
//       [&] {
//         auto lost = source.lost_deliveries(std::chrono::seconds(10));
//         return blacktree::amqp::PeerNews{{}, std::move(lost.running), std::move(lost.settled),
//                                          pool.carried_job_ids()};
//       },
//       [&dispatcher](blacktree::amqp::PeerNews news) {
//         dispatcher.held_elsewhere(std::move(news.running));
//         dispatcher.settled_elsewhere(std::move(news.settled));
//         dispatcher.carried_elsewhere(std::move(news.carried));
//       });
//
// The wire format is v1::PeerRuns as JSON on the fanout exchange
// `options.peers_exchange`.

#include <blacktree/amqp/job_source.hpp>
#include <blacktree/amqp/options.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace blacktree::amqp {

namespace detail {
struct PeersState;
}

/// What an orchestrator on the queue says (v1::PeerRuns).
struct PeerNews {
  std::string from;                  ///< its id (filled in when heard)
  std::vector<std::string> running;  ///< jobs it runs whose deliveries went back to the queue
  std::vector<std::string> settled;  ///< of those, the ones whose statuses it has published since
  std::vector<std::string> carried;  ///< jobs its workers carry (from an orchestrator gone) and it has no delivery of
};

struct AmqpPeersStats {
  std::uint64_t sent = 0;       ///< messages published
  std::uint64_t heard = 0;      ///< messages of other orchestrators for this queue
  std::uint64_t malformed = 0;  ///< messages that were not a PeerRuns (ignored)
  std::uint64_t connects = 0;
  bool connected = false;
};

/// On a connection of its own: declares `options.peers_exchange` (fanout,
/// durable) when `options.declare`, and a server-named, exclusive queue bound
/// to it. On connecting and then every `options.peers_interval` it asks
/// `report` what to say and, when there is anything, publishes it (transient
/// and unconfirmed: it is said again the next interval, which is what makes
/// a message lost with a node harmless). Each message of another
/// orchestrator about `options.execute_queue` goes to `heard`, on the
/// connection's thread (it must not block). Reconnects with backoff, as the
/// other adapters.
///
/// Thread-safety: every member function may be called from any thread.
/// Lifetime: stop() (or the destructor) closes the connection and joins its
/// thread; `report` and `heard` are not called after it returns.
class AmqpPeers {
 public:
  using Report = std::function<PeerNews()>;
  using Heard = std::function<void(PeerNews)>;

  /// Throws std::invalid_argument when `options.url` cannot be used, or
  /// `self` or `options.peers_exchange` is empty.
  AmqpPeers(AmqpOptions options, std::string self, Report report, Heard heard);
  AmqpPeers(const AmqpPeers&) = delete;
  AmqpPeers& operator=(const AmqpPeers&) = delete;
  ~AmqpPeers();

  void stop();
  bool connected() const noexcept;
  std::string endpoint() const;
  AmqpPeersStats stats() const;

 private:
  std::shared_ptr<detail::PeersState> state_;
};

}  // namespace blacktree::amqp
