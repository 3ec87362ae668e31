// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Internal to blacktree::grpc: what the end of a RunJob stream means for its
// job (GrpcTransport's RunCall::OnDone), from what the call saw. A pure
// function, so that the order of its rules is tested without racing gRPC's
// threads against the transport's watch (tests/integration/test_worker_service.cpp).

#include <chrono>
#include <cstdint>

namespace blacktree::grpc::detail {

/// What a RunJob call saw by the time its stream ended.
struct RunSeen {
  bool has_result = false;        ///< the worker's result message arrived
  bool status_ok = false;         ///< the stream ended with OK
  bool cancelled = false;         ///< the dispatcher let go of the call
  bool accepted = false;          ///< the worker's accepted message arrived
  bool accept_timed_out = false;  ///< the transport's accept timeout took the offer back first
  bool refusal = false;           ///< the status is a worker's refusal (busy, draining, taken back)
  std::chrono::milliseconds silent_for{0};  ///< > 0: the heartbeat watch gave the stream up
};

enum class RunEnd : std::uint8_t {
  result,       ///< the worker's result
  let_go,       ///< the dispatcher cancelled the call (operation_aborted)
  taken_back,   ///< not accepted within the accept timeout: offered elsewhere (worker_refused)
  refused,      ///< the worker refused the offer (worker_refused)
  unreachable,  ///< the stream broke before the worker accepted (worker_unreachable)
  silent,       ///< accepted, then silent for the heartbeat timeout (worker_lost)
  broke,        ///< accepted, then the stream broke (worker_lost)
};

inline RunEnd run_end(const RunSeen& seen) noexcept {
  if (seen.has_result && seen.status_ok) return RunEnd::result;
  if (seen.cancelled) return RunEnd::let_go;
  // Before `accepted`: an accepted message that crossed the take-back (read
  // by gRPC before the cancel, handed to the call after it) changes nothing;
  // the worker was told to drop the job, which goes elsewhere.
  if (seen.accept_timed_out) return RunEnd::taken_back;
  if (!seen.accepted) return seen.refusal ? RunEnd::refused : RunEnd::unreachable;
  if (seen.silent_for.count() > 0) return RunEnd::silent;
  return RunEnd::broke;
}

}  // namespace blacktree::grpc::detail
