// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// One schema, three forms: the core's value types, the protobuf messages of
// proto/blacktree/v1/blacktree.proto (gRPC), and the seed's JSON on RabbitMQ
// (protobuf's JSON mapping of the same messages, lowerCamelCase names). Every
// adapter converts through here, so a field is added in one place.

#include <blacktree/core/job.hpp>
#include <blacktree/core/job_board.hpp>
#include <blacktree/core/result.hpp>
#include <blacktree/wire/error.hpp>

#include <blacktree/v1/blacktree.pb.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace blacktree::wire {

namespace v1 = ::blacktree::v1;

// --- core <-> proto --------------------------------------------------------

/// A JobRequest is a build: the job's payload is a worker::BuildSpec
/// (<blacktree/worker/build_spec.hpp>). A job whose payload is a std::string
/// (an embedder's opaque text) travels in the `payload` field alone.
v1::JobRequest to_proto(const core::Job& job);
/// The payload is a worker::BuildSpec. `region` folds into
/// required_labels["region"]; timeout_seconds into timeout.
core::Job from_proto(const v1::JobRequest& request);

v1::JobResponse to_proto(const core::JobResult& result);
core::JobResult from_proto(const v1::JobResponse& response);

/// The proto has one phase per build stage: a running job maps by its stage
/// ("cloning", "building", "pushing"); any other stage of a running job is
/// PHASE_BUILDING, the proto's "doing the work".
v1::Phase to_proto(core::Phase phase, std::string_view stage);
/// The phase and, for PHASE_CLONING/BUILDING/PUSHING, the stage of a running job.
struct PhaseAndStage {
  core::Phase phase = core::Phase::accepted;
  std::string_view stage;
};
PhaseAndStage from_proto(v1::Phase phase);
/// What a person reads for a proto phase: the stage of a running job
/// ("cloning"), else the phase ("accepted", "finished").
std::string_view phase_name(v1::Phase phase);

v1::WorkerState to_proto(core::WorkerState state);
core::WorkerState from_proto(v1::WorkerState state);

v1::WorkerInfo to_proto(const core::WorkerInfo& info);
core::WorkerInfo from_proto(const v1::WorkerInfo& info);

v1::JobEvent to_proto(const core::ProgressEvent& event);
core::ProgressEvent from_proto(const v1::JobEvent& event);

/// A job on an orchestrator's board, as ListJobs reports it.
v1::JobStatus to_proto(const core::JobView& job);

// --- the seed's JSON ------------------------------------------------------

/// A JobRequest read off the queue. When the message is not a valid job,
/// `valid` holds an Error (errc::invalid_json or errc::missing_field) that
/// says what is wrong, for the status and the dead-letter header; `job` then
/// holds what could be read, at least the jobId when there is one, so that a
/// failure status can still name the job.
struct ParsedJob {
  core::Job job;
  core::Result<void> valid;
};

/// The longest jobId accepted: it travels in AMQP short strings (routing
/// keys "job.<jobId>", message ids), which hold 255 bytes.
inline constexpr std::size_t max_job_id_length = 128;

/// A jobId is 1 to max_job_id_length characters of A-Z a-z 0-9 . _ : -
/// (errc::invalid_field otherwise; the message names the rule and the length
/// or the byte position, never the id itself).
core::Result<void> check_job_id(std::string_view id);

/// The largest JobRequest priority.
inline constexpr std::uint32_t max_priority = 9;

/// Parses and validates a seed JobRequest: strict JSON (RFC 8259: no single
/// quotes, bare keys, comments or trailing text), an object with non-empty
/// string fields jobId, repoUrl, branch and imageName, the jobId following
/// check_job_id; dockerfilePath defaults to "Dockerfile" and contextDir to
/// "."; a priority is 0 to max_priority; unknown fields are ignored. A jobId
/// that breaks its rule is not kept in `job`.
ParsedJob parse_job_request(std::string_view json);

/// Parses a cancel.queue message, {"jobId": "...", "reason": "..."}: strict
/// JSON, a jobId following check_job_id, an optional reason of at most 1024
/// bytes; unknown fields are ignored. The error names the field and the rule.
core::Result<v1::CancelRequest> parse_cancel_request(std::string_view json);

/// The seed's JobRequest JSON for `job` (the token included: this is what a
/// control plane publishes).
std::string job_request_json(const core::Job& job);

/// The seed's JobResponse JSON (every seed field present, extensions after).
std::string job_response_json(const core::JobResult& result);

/// Reads a JobResponse back (for clients and tests); errc::invalid_json when
/// it is not one.
core::Result<core::JobResult> parse_job_response(std::string_view json);

/// A progress event as JSON, with the final result when it is the last one.
std::string job_event_json(const core::ProgressEvent& event, const core::JobResult* result = nullptr);

/// `text` with every ill-formed UTF-8 sequence replaced by U+FFFD (one per
/// maximal ill-formed subpart, as Unicode recommends). A job's output is
/// bytes, protobuf string fields must be UTF-8, and one invalid byte would
/// otherwise make a peer refuse the message.
std::string valid_utf8(std::string_view text);
/// The same in place; the common case (ASCII) costs one scan and no copy.
void repair_utf8(std::string& text);

/// `text` as a JSON string, quotes included, appended to `out`: escaped as
/// JSON requires (control bytes as \u00XX) and ill-formed UTF-8 replaced as
/// valid_utf8 does, so any bytes make valid JSON. The one JSON string writer:
/// statuses, events and the services' JSON log lines.
void append_json_string(std::string& out, std::string_view text);

/// Any message to JSON / from JSON with blacktree's options (camelCase names,
/// default values printed, unknown fields ignored). from_json fails with
/// errc::invalid_json and a message naming the JSON field and what is wrong.
std::string to_json(const google::protobuf::Message& message);
core::Result<void> from_json(std::string_view json, google::protobuf::Message& message);

}  // namespace blacktree::wire
