// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/wire/wire.hpp>

#include <blacktree/worker/build_spec.hpp>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <chrono>

namespace blacktree::wire {
namespace {

using google::protobuf::Timestamp;
using google::protobuf::util::TimeUtil;
using system_clock = std::chrono::system_clock;

void set_time(Timestamp* out, system_clock::time_point t) {
  if (t == system_clock::time_point{}) return;  // unset stays unset (absent in JSON)
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  *out = TimeUtil::NanosecondsToTimestamp(ns);
}

system_clock::time_point get_time(const Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return {};
  return system_clock::time_point(
      std::chrono::duration_cast<system_clock::duration>(std::chrono::nanoseconds(TimeUtil::TimestampToNanoseconds(t))));
}

// protobuf names fields as in the .proto ("(repo_url): invalid value"); the
// person reading the error wrote the JSON name, "repoUrl".
std::string json_field_names(std::string_view text) {
  std::string out;
  bool in_parens = false, upper_next = false;
  for (const char c : text) {
    if (c == '(') in_parens = true;
    if (c == ')') in_parens = false;
    if (in_parens && c == '_') {
      upper_next = true;
      continue;
    }
    out += upper_next && c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
    upper_next = false;
  }
  return out;
}

// protobuf's "invalid value <value> for type T": the value may be a secret
// (a numeric githubToken): the field and the rule are enough. Its "for type
// github_token" names a field, which json_field_names renames.
std::string without_value(std::string_view text) {
  std::string out(text);
  const auto value = out.find("invalid value ");
  const auto type = out.find(" for type ", value == std::string::npos ? 0 : value);
  if (value != std::string::npos && type != std::string::npos) out.erase(value + 13, type - value - 13);
  if (const auto field = out.find("for type "); field != std::string::npos && out.find('_', field) != std::string::npos &&
                                                  out.compare(field + 9, 5, "TYPE_") != 0) {
    out.insert(field + 9, "(").push_back(')');
  }
  return out;
}

// The jobId of a message that did not parse as a JobRequest (a field of the
// wrong type, say), so the control plane still gets a status for it.
std::string salvage_job_id(std::string_view json) {
  google::protobuf::Struct object;
  if (!from_json(json, object)) return {};
  const auto it = object.fields().find("jobId");
  if (it == object.fields().end() || !it->second.has_string_value()) return {};
  if (!check_job_id(it->second.string_value())) return {};
  return it->second.string_value();
}

// RFC 8259 and nothing more. protobuf's JSON reader also takes single
// quotes, bare keys and other things no JSON library writes; a body that
// needs them was not written by a control plane and is refused before
// protobuf sees it. Says what is wrong and at which byte, never the text.
class StrictJson {
 public:
  explicit StrictJson(std::string_view text) : s_(text) {}

  /// Empty when the text is exactly one JSON value (whitespace around it allowed).
  std::string check() {
    skip_space();
    if (!value(0)) return error_;
    skip_space();
    if (i_ != s_.size()) fail("more text after the JSON value");
    return error_;
  }

 private:
  static constexpr int max_depth = 64;  // protobuf refuses deeper nesting anyway

  bool fail(const char* what) {
    if (error_.empty()) error_ = std::string(what) + " at byte " + std::to_string(i_);
    return false;
  }
  bool at_end() const { return i_ >= s_.size(); }
  unsigned char peek() const { return static_cast<unsigned char>(s_[i_]); }
  void skip_space() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++i_;
  }
  bool expect(char c, const char* what) {
    if (at_end() || s_[i_] != c) return fail(what);
    ++i_;
    return true;
  }

  bool value(int depth) {
    if (depth > max_depth) return fail("nested deeper than 64 levels");
    if (at_end()) return fail("unexpected end");
    switch (s_[i_]) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"': return string();
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default:
        if (s_[i_] == '-' || (s_[i_] >= '0' && s_[i_] <= '9')) return number();
        return fail("not a JSON value (strings take double quotes)");
    }
  }

  // The members of an object or the elements of an array, from its opening bracket.
  template <class Member>
  bool members(char close, const char* expected, Member&& member) {
    ++i_;
    skip_space();
    if (!at_end() && s_[i_] == close) return ++i_, true;
    for (;;) {
      skip_space();
      if (!member()) return false;
      skip_space();
      if (at_end() || s_[i_] != ',') return expect(close, expected);
      ++i_;
    }
  }

  bool object(int depth) {
    return members('}', "expected ',' or '}' in an object", [&] {
      if (at_end() || s_[i_] != '"') return fail("an object key must be a double-quoted string");
      if (!string()) return false;
      skip_space();
      if (!expect(':', "expected ':' after an object key")) return false;
      skip_space();
      return value(depth);
    });
  }

  bool array(int depth) {
    return members(']', "expected ',' or ']' in an array", [&] { return value(depth); });
  }

  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return fail("not a JSON value");
    i_ += word.size();
    return true;
  }

  bool digits() {
    const std::size_t start = i_;
    while (!at_end() && peek() >= '0' && peek() <= '9') ++i_;
    return i_ > start || fail("expected a digit");
  }

  bool number() {
    if (s_[i_] == '-') ++i_;
    if (!at_end() && s_[i_] == '0') {
      ++i_;
    } else if (!digits()) {
      return false;
    }
    if (!at_end() && s_[i_] == '.') {
      ++i_;
      if (!digits()) return false;
    }
    if (!at_end() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (!at_end() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digits()) return false;
    }
    return true;
  }

  bool string() {
    ++i_;  // the opening quote
    while (!at_end()) {
      const unsigned char c = peek();
      if (c == '"') return ++i_, true;
      if (c < 0x20) return fail("a control character in a string");
      if (c == '\\') {
        ++i_;
        if (at_end()) break;
        const char e = s_[i_++];
        if (e == 'u') {
          for (int k = 0; k < 4; ++k, ++i_)
            if (at_end() || !std::isxdigit(peek())) return fail("a bad \\u escape");
        } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
          return fail("a bad escape in a string");
        }
        continue;
      }
      if (c < 0x80) {
        ++i_;
        continue;
      }
      if (!utf8_sequence()) return fail("invalid UTF-8 in a string");
    }
    return fail("a string without its closing quote");
  }

  // One well-formed UTF-8 sequence (RFC 3629: no overlongs, no surrogates).
  bool utf8_sequence() {
    const unsigned char c = peek();
    int n = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c == 0xE0) n = 2, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) n = 2;
    else if (c == 0xED) n = 2, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) n = 2;
    else if (c == 0xF0) n = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) n = 3;
    else if (c == 0xF4) n = 3, hi = 0x8F;
    else return false;
    ++i_;
    for (int k = 0; k < n; ++k, ++i_) {
      if (at_end() || peek() < lo || peek() > hi) return false;
      lo = 0x80, hi = 0xBF;
    }
    return true;
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::string error_;
};

}  // namespace

// --- core <-> proto ----------------------------------------------------------

v1::JobRequest to_proto(const core::Job& job) {
  v1::JobRequest out;
  out.set_job_id(job.id);
  if (const auto* spec = job.payload.get<worker::BuildSpec>()) {
    out.set_repo_url(spec->repo_url);
    out.set_branch(spec->branch);
    out.set_dockerfile_path(spec->dockerfile_path);
    out.set_context_dir(spec->context_dir);
    out.set_image_name(spec->image_name);
    out.set_github_token(spec->github_token.reveal());
    out.set_payload(spec->payload);
    for (const auto& [key, value] : spec->build_args) (*out.mutable_build_args())[key] = value;
    out.set_target(spec->target);
    for (const auto& [key, value] : spec->image_labels) (*out.mutable_image_labels())[key] = value;
    for (const auto& name : spec->build_secrets) out.add_build_secrets(name);
  } else if (const auto* text = job.payload.get<std::string>()) {
    out.set_payload(*text);
  }
  for (const auto& [key, value] : job.required_labels) (*out.mutable_labels())[key] = value;
  out.set_priority(job.priority);
  out.set_timeout_seconds(static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(job.timeout + std::chrono::milliseconds(999)).count()));
  return out;
}

core::Job from_proto(const v1::JobRequest& request) {
  core::Job job;
  job.id = request.job_id();
  worker::BuildSpec spec{request.repo_url(),   request.branch(),
                        request.dockerfile_path(), request.context_dir(),
                        request.image_name(),      core::Secret(request.github_token()),
                        request.payload()};
  spec.build_args.insert(request.build_args().begin(), request.build_args().end());
  spec.target = request.target();
  spec.image_labels.insert(request.image_labels().begin(), request.image_labels().end());
  spec.build_secrets.assign(request.build_secrets().begin(), request.build_secrets().end());
  job.payload = core::Payload(std::move(spec));
  for (const auto& [key, value] : request.labels()) job.required_labels.emplace(key, value);
  if (!request.region().empty()) job.required_labels.insert_or_assign("region", request.region());
  job.timeout = std::chrono::seconds(request.timeout_seconds());
  job.priority = static_cast<std::uint8_t>(std::min<std::uint32_t>(request.priority(), max_priority));
  return job;
}

v1::JobResponse to_proto(const core::JobResult& result) {
  v1::JobResponse out;
  out.set_job_id(result.job_id);
  out.set_success(result.success);
  out.set_logs(result.logs);
  out.set_image_url(result.image_url);
  out.set_error(result.error);
  out.set_worker_id(result.worker_id);
  out.set_image_digest(result.image_digest);
  out.set_redelivered(result.redelivered);
  out.set_cancelled(result.cancelled);
  out.set_attempts(result.attempts);
  out.set_status_id(result.status_id);
  for (const auto& [stage, took] : result.stage_durations) {
    (*out.mutable_stage_seconds())[stage] = std::chrono::duration<double>(took).count();
  }
  out.set_cached_steps(result.cached_steps);
  out.set_built_steps(result.built_steps);
  for (const bool cached : result.cached_by_step) out.add_cached_by_step(cached);
  set_time(out.mutable_received_at(), result.received_at);
  set_time(out.mutable_started_at(), result.started_at);
  set_time(out.mutable_finished_at(), result.finished_at);
  // An empty Timestamp would still be printed as 1970: drop the unset ones.
  if (result.received_at == system_clock::time_point{}) out.clear_received_at();
  if (result.started_at == system_clock::time_point{}) out.clear_started_at();
  if (result.finished_at == system_clock::time_point{}) out.clear_finished_at();
  return out;
}

core::JobResult from_proto(const v1::JobResponse& response) {
  core::JobResult result;
  result.job_id = response.job_id();
  result.success = response.success();
  result.logs = response.logs();
  result.image_url = response.image_url();
  result.error = response.error();
  result.worker_id = response.worker_id();
  result.image_digest = response.image_digest();
  result.redelivered = response.redelivered();
  result.cancelled = response.cancelled();
  result.attempts = response.attempts();
  result.status_id = response.status_id();
  result.received_at = get_time(response.received_at());
  result.started_at = get_time(response.started_at());
  result.finished_at = get_time(response.finished_at());
  for (const auto& [stage, seconds] : response.stage_seconds()) {
    result.stage_durations[stage] = std::chrono::milliseconds(std::llround(seconds * 1000));
  }
  result.cached_steps = response.cached_steps();
  result.built_steps = response.built_steps();
  result.cached_by_step.assign(response.cached_by_step().begin(), response.cached_by_step().end());
  return result;
}

v1::JobStatus to_proto(const core::JobView& job) {
  v1::JobStatus out;
  out.set_job_id(job.id);
  switch (job.state) {
    case core::BoardState::waiting: out.set_state(v1::JOB_STATE_WAITING); break;
    case core::BoardState::running: out.set_state(v1::JOB_STATE_RUNNING); break;
    case core::BoardState::publishing: out.set_state(v1::JOB_STATE_PUBLISHING); break;
    case core::BoardState::finished: out.set_state(v1::JOB_STATE_FINISHED); break;
  }
  out.set_worker_id(job.worker_id);
  if (job.state != core::BoardState::waiting) out.set_phase(to_proto(job.phase, job.stage));
  for (const auto& [key, value] : job.labels) (*out.mutable_labels())[key] = value;
  out.set_priority(job.priority);
  set_time(out.mutable_received_at(), job.received_at);
  set_time(out.mutable_started_at(), job.started_at);
  set_time(out.mutable_finished_at(), job.finished_at);
  out.set_success(job.success);
  out.set_cancelled(job.cancelled);
  out.set_error(job.error);
  out.set_log_bytes(job.log_bytes);
  return out;
}

v1::Phase to_proto(core::Phase phase, std::string_view stage) {
  switch (phase) {
    case core::Phase::accepted: return v1::PHASE_ACCEPTED;
    case core::Phase::running:
      if (stage == worker::stage::cloning) return v1::PHASE_CLONING;
      if (stage == worker::stage::pushing) return v1::PHASE_PUSHING;
      return v1::PHASE_BUILDING;
    case core::Phase::finished: return v1::PHASE_FINISHED;
  }
  return v1::PHASE_UNSPECIFIED;
}

PhaseAndStage from_proto(v1::Phase phase) {
  switch (phase) {
    case v1::PHASE_CLONING: return {core::Phase::running, worker::stage::cloning};
    case v1::PHASE_BUILDING: return {core::Phase::running, worker::stage::building};
    case v1::PHASE_PUSHING: return {core::Phase::running, worker::stage::pushing};
    case v1::PHASE_FINISHED: return {core::Phase::finished, {}};
    default: return {core::Phase::accepted, {}};
  }
}

std::string_view phase_name(v1::Phase phase) {
  const auto [core_phase, stage] = from_proto(phase);
  return stage.empty() ? core::to_string(core_phase) : stage;
}

v1::WorkerState to_proto(core::WorkerState state) {
  switch (state) {
    case core::WorkerState::registering: return v1::WORKER_STATE_REGISTERING;
    case core::WorkerState::free: return v1::WORKER_STATE_FREE;
    case core::WorkerState::busy: return v1::WORKER_STATE_BUSY;
    case core::WorkerState::draining: return v1::WORKER_STATE_DRAINING;
    case core::WorkerState::dead: return v1::WORKER_STATE_DEAD;
  }
  return v1::WORKER_STATE_UNSPECIFIED;
}

core::WorkerState from_proto(v1::WorkerState state) {
  switch (state) {
    case v1::WORKER_STATE_FREE: return core::WorkerState::free;
    case v1::WORKER_STATE_BUSY: return core::WorkerState::busy;
    case v1::WORKER_STATE_DRAINING: return core::WorkerState::draining;
    case v1::WORKER_STATE_DEAD: return core::WorkerState::dead;
    default: return core::WorkerState::registering;
  }
}

v1::WorkerInfo to_proto(const core::WorkerInfo& info) {
  v1::WorkerInfo out;
  out.set_id(info.id);
  out.set_address(info.address);
  for (const auto& [key, value] : info.labels) (*out.mutable_labels())[key] = value;
  out.set_capacity(info.capacity);
  out.set_version(info.version);
  out.set_incarnation(info.incarnation);
  return out;
}

core::WorkerInfo from_proto(const v1::WorkerInfo& info) {
  core::WorkerInfo out;
  out.id = info.id();
  out.address = info.address();
  for (const auto& [key, value] : info.labels()) out.labels.emplace(key, value);
  out.capacity = info.capacity();
  out.version = info.version();
  out.incarnation = info.incarnation();
  return out;
}

v1::JobEvent to_proto(const core::ProgressEvent& event) {
  v1::JobEvent out;
  out.set_job_id(event.job_id);
  out.set_worker_id(event.worker_id);
  out.set_phase(to_proto(event.phase, event.stage));
  out.set_line(event.line);
  return out;
}

core::ProgressEvent from_proto(const v1::JobEvent& event) {
  const auto [phase, stage] = from_proto(event.phase());
  return core::ProgressEvent{event.job_id(), event.worker_id(), phase, std::string(stage), event.line()};
}

// --- UTF-8 -------------------------------------------------------------------

std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    if (lead < 0x80) {
      out += text[i++];
      continue;
    }
    std::size_t need = 0;
    unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
    if (lead >= 0xC2 && lead <= 0xDF) {
      need = 1;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      need = 2;
      if (lead == 0xE0) low = 0xA0;   // overlong
      if (lead == 0xED) high = 0x9F;  // surrogates
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      need = 3;
      if (lead == 0xF0) low = 0x90;   // overlong
      if (lead == 0xF4) high = 0x8F;  // beyond U+10FFFF
    }
    std::size_t next = i + 1, got = 0;
    for (; got < need && next < text.size(); ++got, ++next) {
      const auto byte = static_cast<unsigned char>(text[next]);
      if (byte < (got == 0 ? low : 0x80) || byte > (got == 0 ? high : 0xBF)) break;
    }
    if (need > 0 && got == need)
      out.append(text.substr(i, need + 1));
    else
      out += "\xEF\xBF\xBD";
    i = next;
  }
  return out;
}

void repair_utf8(std::string& text) {
  const bool ascii = std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (!ascii) text = valid_utf8(text);
}

// --- JSON --------------------------------------------------------------------

std::string to_json(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;  // the seed's consumers expect "error": "" and "success": false
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);  // cannot fail for our messages
  return out;
}

core::Result<void> from_json(std::string_view json, google::protobuf::Message& message) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // SPEC: extensions allowed, unknown fields ignored
  const auto status = google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(json.data(), json.size()), &message, options);
  if (status.ok()) return {};
  // protobuf appends the offending input on later lines; the first says what is wrong.
  const std::string_view text(status.message().data(), status.message().size());
  return core::Error{errc::invalid_json, json_field_names(without_value(text.substr(0, text.find('\n'))))};
}

core::Result<void> check_job_id(std::string_view id) {
  const auto rule = [](std::string what) {
    return core::Error{errc::invalid_field, "jobId " + std::move(what) + ": it must be 1 to " +
                                                std::to_string(max_job_id_length) +
                                                " characters of A-Z a-z 0-9 . _ : -"};
  };
  if (id.empty()) return rule("is empty");
  if (id.size() > max_job_id_length) return rule("has " + std::to_string(id.size()) + " bytes");
  for (std::size_t i = 0; i < id.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(id[i]);
    if (!std::isalnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
      return rule("has a character outside the rule at byte " + std::to_string(i));
  }
  return {};
}

core::Result<v1::CancelRequest> parse_cancel_request(std::string_view json) {
  if (std::string wrong = StrictJson(json).check(); !wrong.empty()) {
    return core::Error{errc::invalid_json, "the message is not a valid cancel request JSON object: not strict JSON: " +
                                               wrong};
  }
  v1::CancelRequest request;
  if (auto read = from_json(json, request); !read) {
    return core::Error{errc::invalid_json, "the message is not a valid cancel request JSON object: " +
                                               read.error().message()};
  }
  if (request.job_id().empty()) return core::Error{errc::missing_field, "the cancel request lacks jobId"};
  if (auto id = check_job_id(request.job_id()); !id) return id.error();
  constexpr std::size_t max_reason = 1024;
  if (request.reason().size() > max_reason) {
    return core::Error{errc::invalid_field, "reason is " + std::to_string(request.reason().size()) +
                                                " bytes: it must be at most " + std::to_string(max_reason)};
  }
  return request;
}

ParsedJob parse_job_request(std::string_view json) {
  ParsedJob parsed;
  if (std::string wrong = StrictJson(json).check(); !wrong.empty()) {
    parsed.valid = core::Error{errc::invalid_json,
                               "the message is not a valid JobRequest JSON object: not strict JSON: " + wrong};
    return parsed;
  }
  v1::JobRequest request;
  if (auto read = from_json(json, request); !read) {
    parsed.job.id = salvage_job_id(json);
    parsed.valid = core::Error{errc::invalid_json,
                               "the message is not a valid JobRequest JSON object: " + read.error().message()};
    return parsed;
  }
  if (!request.job_id().empty()) {
    if (auto id = check_job_id(request.job_id()); !id) {
      parsed.valid = std::move(id);  // and no job id: nothing may carry this one further
      return parsed;
    }
  }
  if (request.dockerfile_path().empty()) request.set_dockerfile_path("Dockerfile");
  if (request.context_dir().empty()) request.set_context_dir(".");
  parsed.job = from_proto(request);

  std::string missing;
  const auto require = [&](const std::string& value, std::string_view name) {
    if (!value.empty()) return;
    if (!missing.empty()) missing += ", ";
    missing += name;
  };
  require(request.job_id(), "jobId");
  require(request.repo_url(), "repoUrl");
  require(request.branch(), "branch");
  require(request.image_name(), "imageName");
  if (!missing.empty()) {
    parsed.valid = core::Error{errc::missing_field, "the JobRequest lacks required field(s): " + missing};
  } else if (request.priority() > max_priority) {
    parsed.valid = core::Error{errc::invalid_field, "priority is " + std::to_string(request.priority()) +
                                                        ": it must be 0 to " + std::to_string(max_priority)};
  }
  return parsed;
}

std::string job_request_json(const core::Job& job) {
  auto request = to_proto(job);
  return to_json(request);
}

core::Result<core::JobResult> parse_job_response(std::string_view json) {
  v1::JobResponse response;
  if (auto read = from_json(json, response); !read) return std::move(read).error();
  return from_proto(response);
}

}  // namespace blacktree::wire
