// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The JSON of statuses and progress events, written straight from the core
// types. The orchestrator writes a status and at least one event per job, and
// going through protobuf's MessageToJsonString (a proto copy of the result,
// then reflection, a default-value writer and a string per field) was about a
// tenth of its CPU at a thousand jobs a second. The output is what
// to_json(to_proto(...)) prints, field for field, in the same order (the test
// "wire: the status and event JSON are what protobuf's printer makes of
// them" holds the two equal), and protobuf still reads it back.
#include <blacktree/wire/wire.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <type_traits>

namespace blacktree::wire {
namespace {

void append_escaped(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  std::size_t plain = 0;  // start of the run not yet copied
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.substr(plain, i - plain));
    plain = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        out += "\\u00";
        out += hex[c >> 4];
        out += hex[c & 0xf];
    }
  }
  out.append(text.substr(plain));
  out += '"';
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  if (std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x80; })) {
    append_escaped(out, valid_utf8(text));  // JSON text is UTF-8 (and protobuf requires it of a string field)
  } else {
    append_escaped(out, text);
  }
}

namespace {

using system_clock = std::chrono::system_clock;

// Appends members to a JSON object or array being written into `out`.
class JsonOut {
 public:
  explicit JsonOut(std::string& out) : out_(out) {}

  void open(char bracket) { out_ += bracket; }
  void close(char bracket) { out_ += bracket; }

  // A member's name (plain ASCII, known here), with the comma before it.
  void key(std::string_view name) {
    separate();
    out_ += '"';
    out_ += name;
    out_ += "\":";
  }
  void element() { separate(); }

  // A member: its name, then its value.
  template <class T>
  void member(std::string_view name, const T& value) {
    key(name);
    if constexpr (std::is_same_v<T, bool>) {
      boolean(value);
    } else if constexpr (std::is_same_v<T, std::uint32_t>) {
      number(value);
    } else {
      string(value);
    }
  }

  void string(std::string_view text) { append_json_string(out_, text); }
  void boolean(bool value) { out_ += value ? "true" : "false"; }
  void number(std::uint32_t value) { append_chars(value); }
  void number(double value) { append_chars(value); }  // shortest form that reads back the same

  // RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits, as protobuf prints a Timestamp.
  void time(system_clock::time_point t) {
    using namespace std::chrono;
    const auto ns = duration_cast<nanoseconds>(t.time_since_epoch());
    const auto day = floor<days>(ns);
    const year_month_day date{sys_days(day)};
    const auto in_day = ns - day;
    const auto secs = duration_cast<seconds>(in_day);
    const hh_mm_ss<seconds> clock(secs);
    const long long fraction = (in_day - secs).count();  // 0..999,999,999 ns
    char buf[48];
    int n = std::snprintf(buf, sizeof buf, "\"%04d-%02u-%02uT%02d:%02d:%02lld", static_cast<int>(date.year()),
                          static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()),
                          static_cast<int>(clock.hours().count()), static_cast<int>(clock.minutes().count()),
                          static_cast<long long>(clock.seconds().count()));
    if (fraction != 0) {
      if (fraction % 1'000'000 == 0) {
        n += std::snprintf(buf + n, sizeof buf - static_cast<std::size_t>(n), ".%03lld", fraction / 1'000'000);
      } else if (fraction % 1'000 == 0) {
        n += std::snprintf(buf + n, sizeof buf - static_cast<std::size_t>(n), ".%06lld", fraction / 1'000);
      } else {
        n += std::snprintf(buf + n, sizeof buf - static_cast<std::size_t>(n), ".%09lld", fraction);
      }
    }
    out_.append(buf, static_cast<std::size_t>(n));
    out_ += "Z\"";
  }

 private:
  void separate() {
    const char last = out_.empty() ? '\0' : out_.back();
    if (last != '{' && last != '[' && last != ':' && last != '\0') out_ += ',';
  }

  template <class T>
  void append_chars(T value) {
    char buf[32];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    out_.append(buf, ec == std::errc{} ? end : buf);
  }

  std::string& out_;
};

void write_response(JsonOut& out, const core::JobResult& r) {
  out.open('{');
  out.member("jobId", r.job_id);
  out.member("success", r.success);
  out.member("logs", r.logs);
  out.member("imageUrl", r.image_url);
  out.member("error", r.error);
  out.member("workerId", r.worker_id);
  out.member("imageDigest", r.image_digest);
  out.member("redelivered", r.redelivered);
  out.member("attempts", r.attempts);
  // Unset times are absent, as in to_proto.
  const std::pair<std::string_view, system_clock::time_point> times[] = {
      {"receivedAt", r.received_at}, {"startedAt", r.started_at}, {"finishedAt", r.finished_at}};
  for (const auto& [name, t] : times) {
    if (t == system_clock::time_point{}) continue;
    out.key(name);
    out.time(t);
  }
  out.member("statusId", r.status_id);
  out.key("stageSeconds");
  out.open('{');
  for (const auto& [stage, took] : r.stage_durations) {
    out.key(stage);  // stage names are the worker's own ASCII words (worker::stage)
    out.number(std::chrono::duration<double>(took).count());
  }
  out.close('}');
  out.member("cachedSteps", r.cached_steps);
  out.member("builtSteps", r.built_steps);
  out.member("cancelled", r.cancelled);
  out.key("cachedByStep");
  out.open('[');
  for (const bool cached : r.cached_by_step) {
    out.element();
    out.boolean(cached);
  }
  out.close(']');
  out.close('}');
}

}  // namespace

std::string job_response_json(const core::JobResult& result) {
  std::string json;
  json.reserve(320 + result.logs.size() + result.error.size());
  JsonOut out(json);
  write_response(out, result);
  return json;
}

std::string job_event_json(const core::ProgressEvent& event, const core::JobResult* result) {
  std::string json;
  json.reserve(160 + event.line.size() + (result ? 320 + result->logs.size() + result->error.size() : 0));
  JsonOut out(json);
  out.open('{');
  out.member("jobId", event.job_id);
  out.member("workerId", event.worker_id);
  out.member("phase", v1::Phase_Name(to_proto(event.phase, event.stage)));
  out.member("line", event.line);
  out.key("time");
  out.time(system_clock::now());
  if (result) {
    out.key("result");
    write_response(out, *result);
  }
  out.close('}');
  return json;
}

}  // namespace blacktree::wire
