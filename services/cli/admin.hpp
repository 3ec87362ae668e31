// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// The orchestrator's admin calls (`blacktree workers`, `blacktree jobs`): one
// way to dial it (address, mutual TLS, registration token, deadline) and to
// say what went wrong in the commands' flags; and the tables they print.

#include "commands.hpp"

#include <blacktree/v1/blacktree.grpc.pb.h>

#include <google/protobuf/map.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::cli {

/// Calls the orchestrator's `method` (its name, for messages) through `call`,
/// which gets a stub and a context carrying the deadline and the token.
/// exit_ok when the call succeeded; else the exit code after printing what
/// went wrong and which flag to look at.
int call_orchestrator(const OrchestratorConnection& connection, std::string_view method,
                      const std::function<::grpc::Status(v1::Orchestrator::Stub&, ::grpc::ClientContext&)>& call);

/// Prints `rows` (the first one the header) on stdout in columns two spaces
/// apart, the last one unpadded.
void print_columns(const std::vector<std::vector<std::string>>& rows);

/// "key=value,key2=value2", sorted by key (a proto map has no order) so that
/// a table is stable between runs; "-" when empty.
std::string labels_text(const google::protobuf::Map<std::string, std::string>& labels);

/// Whole seconds from `from` to `to` (at least 0); nullopt when `from` is unset.
/// An unset `to` is now.
std::optional<std::int64_t> seconds_between(const google::protobuf::Timestamp& from,
                                             const google::protobuf::Timestamp& to = {});

}  // namespace blacktree::cli
