// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "admin.hpp"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <map>

namespace blacktree::cli {
namespace {

// What to do about a failed call, for the person at the terminal.
std::string explain(const ::grpc::Status& status, std::string_view method, const OrchestratorConnection& c) {
  const std::string where = "the orchestrator at " + c.address;
  switch (status.error_code()) {
    case ::grpc::StatusCode::UNAVAILABLE:
      return "cannot reach " + where + ": is it running? (set --orchestrator-addr or ORCHESTRATOR_ADDR) Under "
             "mutual TLS, a certificate from its CA is needed (--tls-cert, --tls-key, --tls-ca) [" +
             status.error_message() + "]";
    case ::grpc::StatusCode::DEADLINE_EXCEEDED:
      return where + " did not answer within " + std::to_string(c.timeout_s) +
             " s: is it overloaded, or is that address something else? (--rpc-timeout-s waits longer)";
    case ::grpc::StatusCode::UNAUTHENTICATED:
      return where + " requires its registration token: pass --registration-token-file FILE or set "
                     "BLACKTREE_REGISTRATION_TOKEN";
    case ::grpc::StatusCode::PERMISSION_DENIED:
      return where + " refused the registration token: use the token the orchestrator was started with "
                     "(--registration-token-file FILE or BLACKTREE_REGISTRATION_TOKEN)";
    case ::grpc::StatusCode::UNIMPLEMENTED:
      return fmt::format("{} does not serve blacktree.v1.Orchestrator/{}: is that address a blacktree "
                         "orchestrator of this version?", where, method);
    default:
      return fmt::format("{} on {} failed ({}): {}", method, where, static_cast<int>(status.error_code()),
                         status.error_message());
  }
}

}  // namespace

int call_orchestrator(const OrchestratorConnection& c, std::string_view method,
                      const std::function<::grpc::Status(v1::Orchestrator::Stub&, ::grpc::ClientContext&)>& call) {
  if (c.address.empty()) {
    fmt::print(stderr, "blacktree: error: --orchestrator-addr must be host:port\n");
    return exit_usage;
  }
  auto credentials = grpc::channel_credentials(c.tls);
  if (!credentials) {
    fmt::print(stderr, "blacktree: error: {}\n", credentials.error().message());
    return exit_usage;
  }
  auto stub = v1::Orchestrator::NewStub(::grpc::CreateChannel(c.address, *credentials));
  ::grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(c.timeout_s));
  if (!c.token.empty()) context.AddMetadata("authorization", "Bearer " + c.token.reveal());
  if (const auto status = call(*stub, context); !status.ok()) {
    fmt::print(stderr, "blacktree: error: {}\n", explain(status, method, c));
    return exit_unreachable;
  }
  return exit_ok;
}

void print_columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += i + 1 < row.size() ? fmt::format("{:<{}}  ", row[i], width[i]) : row[i];
    }
    fmt::print("{}\n", line);
  }
}

std::string labels_text(const google::protobuf::Map<std::string, std::string>& labels) {
  const std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  std::string out;
  for (const auto& [key, value] : sorted) out += (out.empty() ? "" : ",") + key + "=" + value;
  return out.empty() ? "-" : out;
}

std::optional<std::int64_t> seconds_between(const google::protobuf::Timestamp& from,
                                             const google::protobuf::Timestamp& to) {
  const auto unset = [](const google::protobuf::Timestamp& t) { return t.seconds() == 0 && t.nanos() == 0; };
  if (unset(from)) return std::nullopt;
  const auto end = unset(to) ? google::protobuf::util::TimeUtil::GetCurrentTime() : to;
  return std::max<std::int64_t>(0, (end - from).seconds());
}

}  // namespace blacktree::cli
