// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// What both executables need and nothing else does: layered configuration
// (flags > environment > YAML file > defaults) and logging set-up.

#include <blacktree/core/result.hpp>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::service {

/// Reads a YAML mapping as CLI11 configuration: `ping_interval_ms: 500` or
/// `ping-interval-ms: 500` sets `--ping-interval-ms`; nested maps join their
/// keys with '-' (`amqp: {url: ...}` sets `--amqp-url`); sequences give
/// multi-valued options. An unknown key is an error that names it. A key
/// whose option's environment variable is set is skipped, so the environment
/// overrides the file (CLI11 alone would let the file win).
class YamlConfig final : public CLI::Config {
 public:
  explicit YamlConfig(const CLI::App* app = nullptr) : app_(app) {}
  std::string to_config(const CLI::App*, bool, bool, std::string) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;

 private:
  const CLI::App* app_;
};

/// Adds `--config FILE` (env BLACKTREE_CONFIG) read with YamlConfig. Options
/// declared with ->envname() then resolve flag > environment > file > default.
void add_config_file_option(CLI::App& app);

struct LogOptions {
  std::string format = "text";  ///< text | json
  std::string level = "info";   ///< trace | debug | info | warn | error
};
void add_log_options(CLI::App& app, LogOptions& options);

/// A logger writing to stderr in the chosen format: text for terminals, or one
/// JSON object per line ({"time_ms","level","logger","msg"}, and the fields
/// of a line logged with log_event()).
std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const LogOptions& options);

/// What a log line is about, besides its message, for log shippers to query
/// on. With `--log-format json` every field that is not empty becomes a
/// member of the line's object ("event":"job.assigned","job_id":"j1",...);
/// with `text` the line is the message alone, as readable as ever (put the
/// ids in the message too). Views: they need to live only for the call.
struct LogFields {
  std::string_view event{};       ///< what happened: a short stable dotted name (job.assigned, worker.dead, ...)
  std::string_view job_id{};
  std::string_view worker_id{};
  std::string_view phase{};       ///< where the job is now: waiting, running, publishing, finished, requeued
  std::string_view state{};       ///< a worker's state now: registering, free, draining, dead, removed, ...
  std::string_view from{};        ///< a worker's state before the change
  std::string_view outcome{};     ///< how a job (or a cancel) ended: succeeded, failed, cancelled, ...
  std::string_view connection{};  ///< which broker connection: source, status, events
  std::string_view reason{};      ///< why, in words
};

/// Logs one line with fields (thread-safe as the logger; nothing is
/// formatted below the logger's level):
///
///   log_event(*log, spdlog::level::info, {.event = "job.assigned", .job_id = job.id, .worker_id = worker.id},
///             "job {} assigned to worker {} at {}", job.id, worker.id, worker.address);
///
/// Only for loggers from make_logger(), whose formatters read the fields;
/// another formatter would print them encoded in the message.
template <class... Args>
void log_event(spdlog::logger& logger, spdlog::level::level_enum level, const LogFields& fields,
               fmt::format_string<Args...> format, Args&&... args) {
  if (!logger.should_log(level)) return;
  log_event_message(logger, level, fields, fmt::vformat(format, fmt::make_format_args(args...)));
}
/// log_event() with its message formatted already.
void log_event_message(spdlog::logger& logger, spdlog::level::level_enum level, const LogFields& fields,
                       std::string_view message);

/// `text` with control characters escaped (\n, \r, \t, \xHH): what the
/// text log format does to every message, so that untrusted text in one (a
/// jobId holding a newline) cannot write a line that looks like another log line.
std::string escape_log_text(std::string_view text);

/// No core dumps, and the process not dumpable (no ptrace attach, no
/// /proc/<pid>/mem or environ for other processes of the same user): a core
/// or a debugger would hold the tokens and credentials in memory. Programs
/// the process starts get their own dumpable flag back at exec; the zero
/// core limit is inherited. Call first thing in main().
void disable_core_dumps();

/// Turns off abseil's mutex deadlock detection, which Debian's abseil keeps
/// on: a lock-order graph updated on every acquisition of a gRPC mutex
/// (1.6% of the orchestrator's CPU under load), for lock inversions in gRPC
/// itself that its own tests are there to find. Call first thing in main().
void skip_lock_order_checks();

/// Reads a secret from a file (trailing newline dropped); an error names the
/// option and the file ("--token-file: the file /x is empty").
core::Result<std::string> read_secret_file(const std::string& path, std::string_view option);

/// "k=v,k2=v2" or repeated "k=v" into labels; an error names the bad item.
core::Result<std::map<std::string, std::string, std::less<>>> parse_labels(const std::vector<std::string>& items);

/// host:port -> port (0 when absent or not a number).
int port_of(std::string_view address);

/// `n` random hex digits (ids, incarnations).
std::string random_hex(std::size_t n);

/// Blocks SIGTERM and SIGINT in this thread and every thread started after
/// it; returns the set for sigwait(). Call first thing in main().
sigset_t block_termination_signals();

/// The registration token: from `file` when given, else env
/// BLACKTREE_REGISTRATION_TOKEN, else empty.
core::Result<std::string> registration_token(const std::string& file);

/// Mutual TLS for gRPC (--tls-cert, --tls-key, --tls-ca,
/// --tls-reload-interval-s; env BLACKTREE_TLS_*; YAML `tls: {cert: ...}`), and
/// for the servers --insecure (env BLACKTREE_INSECURE).
struct TlsFlags {
  std::string cert;
  std::string key;
  std::string ca;
  std::uint32_t reload_interval_s = 60;
  bool insecure = false;
};
void add_tls_options(CLI::App& app, TlsFlags& flags, bool with_insecure);

/// Makes every named option of `app` that takes a list take one value per
/// occurrence (repeat the flag, or separate with commas where the option
/// says so), so that `--label a=b -- cmd -c x` ends --label's values at
/// `a=b` and hands the rest, `-c` included, to the positional command.
/// Call after every option is added.
void one_value_per_flag(CLI::App& app);

/// For main()'s flag handling, where CLI11 reports usage errors by exception
/// and app.exit() prints them: the value, or CLI::ValidationError carrying
/// the error's message (same exit code as a bad flag).
template <class T>
T value_or_usage_error(core::Result<T> result) {
  if (!result) throw CLI::ValidationError(result.error().message());
  return std::move(*result);
}
inline void value_or_usage_error(core::Result<void> result) {
  if (!result) throw CLI::ValidationError(result.error().message());
}

}  // namespace blacktree::service
