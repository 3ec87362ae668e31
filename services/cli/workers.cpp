// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// `blacktree workers`: the orchestrator's view of its workers
// (blacktree.v1.Orchestrator/ListWorkers), as a table or as JSON.

#include "commands.hpp"

#include <blacktree/v1/blacktree.grpc.pb.h>
#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <array>
#include <chrono>

namespace blacktree::cli {
namespace {

// What to do about a failed call, for the person at the terminal.
std::string explain(const ::grpc::Status& status, const std::string& address, std::uint32_t timeout_s) {
  const std::string where = "the orchestrator at " + address;
  switch (status.error_code()) {
    case ::grpc::StatusCode::UNAVAILABLE:
      return "cannot reach " + where + ": is it running? (set --orchestrator-addr or ORCHESTRATOR_ADDR) Under "
             "mutual TLS, a certificate from its CA is needed (--tls-cert, --tls-key, --tls-ca) [" +
             status.error_message() + "]";
    case ::grpc::StatusCode::DEADLINE_EXCEEDED:
      return where + " did not answer within " + std::to_string(timeout_s) +
             " s: is it overloaded, or is that address something else? (--rpc-timeout-s waits longer)";
    case ::grpc::StatusCode::UNAUTHENTICATED:
      return where + " requires its registration token: pass --registration-token-file FILE or set "
                     "BLACKTREE_REGISTRATION_TOKEN";
    case ::grpc::StatusCode::PERMISSION_DENIED:
      return where + " refused the registration token: use the token the orchestrator was started with "
                     "(--registration-token-file FILE or BLACKTREE_REGISTRATION_TOKEN)";
    case ::grpc::StatusCode::UNIMPLEMENTED:
      return where + " does not serve blacktree.v1.Orchestrator/ListWorkers: is that address a blacktree "
                     "orchestrator of this version?";
    default:
      return "ListWorkers on " + where + " failed (" + std::to_string(static_cast<int>(status.error_code())) +
             "): " + status.error_message();
  }
}

std::string state_name(v1::WorkerState state) {
  if (state == v1::WORKER_STATE_UNSPECIFIED) return "unknown";
  return std::string(core::to_string(wire::from_proto(state)));
}

std::string last_seen(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "never";
  const auto now = google::protobuf::util::TimeUtil::GetCurrentTime();
  const auto ago = std::max<std::int64_t>(0, (now - t).seconds());
  return fmt::format("{}s ago", ago);
}

std::string labels_text(const v1::WorkerInfo& worker) {
  // Sorted (the proto map has no order) so the table is stable between runs.
  const std::map<std::string, std::string> sorted(worker.labels().begin(), worker.labels().end());
  std::string out;
  for (const auto& [key, value] : sorted) out += (out.empty() ? "" : ",") + key + "=" + value;
  return out.empty() ? "-" : out;
}

void print_table(const v1::ListWorkersReply& reply) {
  using Row = std::array<std::string, 8>;
  std::vector<Row> rows{{"ID", "STATE", "REGION", "CAPACITY", "RUNNING", "LAST SEEN", "ADDRESS", "LABELS"}};
  std::vector<const v1::WorkerStatus*> workers;
  for (const auto& w : reply.workers()) workers.push_back(&w);
  std::sort(workers.begin(), workers.end(),
            [](const auto* a, const auto* b) { return a->worker().id() < b->worker().id(); });
  for (const auto* w : workers) {
    const auto& info = w->worker();
    const auto region = info.labels().find("region");
    rows.push_back({info.id(), state_name(w->state()),
                    region == info.labels().end() || region->second.empty() ? "-" : region->second,
                    std::to_string(info.capacity()), std::to_string(w->running()), last_seen(w->last_seen()),
                    info.address(), labels_text(info)});
  }
  std::array<std::size_t, 8> width{};
  for (const auto& row : rows)
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += i + 1 < row.size() ? fmt::format("{:<{}}  ", row[i], width[i]) : row[i];
    }
    fmt::print("{}\n", line);
  }
}

}  // namespace

int run_workers(const WorkersSettings& s) {
  if (s.orchestrator_addr.empty()) {
    fmt::print(stderr, "blacktree: error: --orchestrator-addr must be host:port\n");
    return exit_usage;
  }
  auto credentials = grpc::channel_credentials(s.tls);
  if (!credentials) {
    fmt::print(stderr, "blacktree: error: {}\n", credentials.error().message());
    return exit_usage;
  }
  auto stub = v1::Orchestrator::NewStub(::grpc::CreateChannel(s.orchestrator_addr, *credentials));
  ::grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(s.timeout_s));
  if (!s.token.empty()) context.AddMetadata("authorization", "Bearer " + s.token.reveal());
  v1::ListWorkersReply reply;
  const auto status = stub->ListWorkers(&context, v1::ListWorkersRequest{}, &reply);
  if (!status.ok()) {
    fmt::print(stderr, "blacktree: error: {}\n", explain(status, s.orchestrator_addr, s.timeout_s));
    return exit_unreachable;
  }
  if (s.json) {
    fmt::print("{}\n", wire::to_json(reply));
    return exit_ok;
  }
  print_table(reply);
  if (reply.workers_size() == 0)
    fmt::print(stderr, "blacktree: no workers are registered with the orchestrator at {}\n", s.orchestrator_addr);
  return exit_ok;
}

}  // namespace blacktree::cli
