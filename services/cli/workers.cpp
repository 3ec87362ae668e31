// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// `blacktree workers`: the orchestrator's view of its workers
// (blacktree.v1.Orchestrator/ListWorkers), as a table or as JSON.

#include "admin.hpp"

#include <blacktree/wire/wire.hpp>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>

namespace blacktree::cli {
namespace {

std::string state_name(v1::WorkerState state) {
  if (state == v1::WORKER_STATE_UNSPECIFIED) return "unknown";
  return std::string(core::to_string(wire::from_proto(state)));
}

std::string last_seen(const google::protobuf::Timestamp& t) {
  const auto ago = seconds_between(t);
  return ago ? fmt::format("{}s ago", *ago) : "never";
}

void print_table(const v1::ListWorkersReply& reply) {
  std::vector<std::vector<std::string>> rows{
      {"ID", "STATE", "REGION", "CAPACITY", "RUNNING", "LAST SEEN", "ADDRESS", "LABELS"}};
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
                    info.address(), labels_text(info.labels())});
  }
  print_columns(rows);
}

}  // namespace

int run_workers(const WorkersSettings& s) {
  v1::ListWorkersReply reply;
  if (const int called = call_orchestrator(s.orchestrator, "ListWorkers",
                                           [&](v1::Orchestrator::Stub& stub, ::grpc::ClientContext& context) {
                                             return stub.ListWorkers(&context, v1::ListWorkersRequest{}, &reply);
                                           });
      called != exit_ok)
    return called;
  if (s.json) {
    fmt::print("{}\n", wire::to_json(reply));
    return exit_ok;
  }
  print_table(reply);
  if (reply.workers_size() == 0)
    fmt::print(stderr, "blacktree: no workers are registered with the orchestrator at {}\n", s.orchestrator.address);
  return exit_ok;
}

}  // namespace blacktree::cli
