// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include "service.hpp"

#include <blacktree/wire/wire.hpp>

#include <absl/synchronization/mutex.h>
#include <fmt/format.h>
#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <charconv>
#include <cstdlib>
#include <chrono>
#include <fstream>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <random>
#include <sstream>

namespace blacktree::service {
namespace {

void flatten(const YAML::Node& node, const std::string& prefix, std::vector<CLI::ConfigItem>& out) {
  for (const auto& entry : node) {
    std::string key = entry.first.as<std::string>();
    for (auto& c : key) {
      if (c == '_') c = '-';
    }
    const std::string name = prefix.empty() ? key : prefix + "-" + key;
    const YAML::Node& value = entry.second;
    if (value.IsMap()) {
      flatten(value, name, out);
      continue;
    }
    CLI::ConfigItem item;
    item.name = name;
    if (value.IsSequence()) {
      for (const auto& element : value) item.inputs.push_back(element.as<std::string>());
    } else if (!value.IsNull()) {
      item.inputs.push_back(value.as<std::string>());
    }
    out.push_back(std::move(item));
  }
}

// A line logged with fields (log_event) carries them in its payload, ahead
// of its message: each field as its length in decimal, ':' and its bytes, in
// LogFields' order. What marks such a line is the address of kFieldsTag as
// its source file name, which no other log call can pass: a plain line whose
// text looks like fields (an untrusted jobId) stays text.
constexpr char kFieldsTag[] = "blacktree-log-fields";
constexpr std::array<std::string_view, 9> kFieldNames{"event", "job_id",  "worker_id",  "phase", "state",
                                                      "from",  "outcome", "connection", "reason"};

std::array<std::string_view, kFieldNames.size()> values_of(const LogFields& f) {
  return {f.event, f.job_id, f.worker_id, f.phase, f.state, f.from, f.outcome, f.connection, f.reason};
}

struct Payload {
  std::array<std::string_view, kFieldNames.size()> fields{};
  std::string_view message;
};

Payload decode(const spdlog::details::log_msg& msg) {
  Payload out;
  std::string_view rest(msg.payload.data(), msg.payload.size());
  if (msg.source.filename != kFieldsTag) {
    out.message = rest;
    return out;
  }
  for (auto& field : out.fields) {
    const auto colon = rest.find(':');
    std::size_t size = 0;
    if (colon == std::string_view::npos ||
        std::from_chars(rest.data(), rest.data() + colon, size).ec != std::errc{} || size > rest.size() - colon - 1) {
      return Payload{{}, std::string_view(msg.payload.data(), msg.payload.size())};  // not ours after all
    }
    field = rest.substr(colon + 1, size);
    rest.remove_prefix(colon + 1 + size);
  }
  out.message = rest;
  return out;
}

// One JSON object per line, for log shippers: time_ms, level, logger, msg,
// then the line's fields that are set.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto time = std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
    const auto level = spdlog::level::to_string_view(msg.level);
    const Payload payload = decode(msg);
    auto line = fmt::format(R"({{"time_ms":{},"level":"{}","logger":)", time,
                            std::string_view(level.data(), level.size()));
    blacktree::wire::append_json_string(line, std::string_view(msg.logger_name.data(), msg.logger_name.size()));
    line += R"(,"msg":)";
    blacktree::wire::append_json_string(line, payload.message);
    for (std::size_t i = 0; i < kFieldNames.size(); ++i) {
      if (payload.fields[i].empty()) continue;
      line += fmt::format(R"(,"{}":)", kFieldNames[i]);
      blacktree::wire::append_json_string(line, payload.fields[i]);
    }
    line += "}\n";
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

// %v with escape_log_text: a message quoting untrusted text (a jobId with a
// newline in it) cannot start a line of its own. A line's fields are not
// shown: its message names what matters.
class EscapedPayload final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string text = escape_log_text(decode(msg).message);
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<EscapedPayload>(); }
};

}  // namespace

std::string escape_log_text(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      out += fmt::format("\\x{:02x}", u);
    } else {
      out += c;
    }
  }
  return out;
}

void disable_core_dumps() {
  const rlimit none{0, 0};
  ::setrlimit(RLIMIT_CORE, &none);
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

void skip_lock_order_checks() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }

std::string YamlConfig::to_config(const CLI::App*, bool, bool, std::string) const {
  return {};  // writing configuration back is not supported
}

std::vector<CLI::ConfigItem> YamlConfig::from_config(std::istream& input) const {
  std::vector<CLI::ConfigItem> result;
  YAML::Node root;
  try {
    root = YAML::Load(input);
  } catch (const YAML::Exception& e) {
    throw CLI::ConversionError(fmt::format("the configuration file is not valid YAML: {}", e.what()));
  }
  if (root.IsNull()) return result;
  if (!root.IsMap()) throw CLI::ConversionError("the configuration file must be a YAML mapping of setting: value");
  flatten(root, "", result);
  if (app_ != nullptr) {
    std::erase_if(result, [this](const CLI::ConfigItem& item) {
      const CLI::Option* option = app_->get_option_no_throw("--" + item.name);
      if (option == nullptr || option->get_envname().empty()) return false;
      const char* value = std::getenv(option->get_envname().c_str());
      return value != nullptr && *value != '\0';
    });
  }
  return result;
}

void add_config_file_option(CLI::App& app) {
  app.config_formatter(std::make_shared<YamlConfig>(&app));
  // CLI11 reads the file before it looks at the environment, so
  // BLACKTREE_CONFIG is applied here as the default file (required: a
  // variable naming a missing file is an error, not silence).
  const char* from_env = std::getenv("BLACKTREE_CONFIG");
  const bool env_set = from_env != nullptr && *from_env != '\0';
  app.set_config("--config", env_set ? from_env : "",
                 "YAML configuration file, or env BLACKTREE_CONFIG (flags override the environment, which "
                 "overrides the file)",
                 env_set);
  app.allow_config_extras(CLI::config_extras_mode::error);
}

void add_log_options(CLI::App& app, LogOptions& options) {
  app.add_option("--log-format", options.format, "text or json (one JSON object per line)")
      ->envname("BLACKTREE_LOG_FORMAT")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--log-level", options.level, "trace, debug, info, warn or error")
      ->envname("BLACKTREE_LOG_LEVEL")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, const LogOptions& options) {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  if (options.format == "json") {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    auto text = std::make_unique<spdlog::pattern_formatter>();
    text->add_flag<EscapedPayload>('*').set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %*");
    logger->set_formatter(std::move(text));
  }
  logger->set_level(spdlog::level::from_str(options.level));
  logger->flush_on(spdlog::level::trace);  // tests and log shippers read lines as they come
  return logger;
}

void log_event_message(spdlog::logger& logger, spdlog::level::level_enum level, const LogFields& fields,
                       std::string_view message) {
  std::string payload;
  for (const auto value : values_of(fields)) {
    payload += std::to_string(value.size());
    payload += ':';
    payload += value;
  }
  payload += message;
  logger.log(spdlog::source_loc{kFieldsTag, 0, nullptr}, level, spdlog::string_view_t(payload.data(), payload.size()));
}

core::Result<std::string> read_secret_file(const std::string& path, std::string_view option) {
  std::ifstream in(path);
  if (!in) {
    return core::Error{std::make_error_code(std::errc::io_error),
                       fmt::format("{}: cannot read the file {}", option, path)};
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string value = buffer.str();
  while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
  if (value.empty()) {
    return core::Error{std::make_error_code(std::errc::invalid_argument),
                       fmt::format("{}: the file {} is empty", option, path)};
  }
  return value;
}

void one_value_per_flag(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    // CLI11 takes a `--` right after a list option as the end of its values,
    // and parses what follows as flags again: one value per flag avoids it.
    if (option->get_positional() || option->get_items_expected_max() <= 1) continue;
    option->allow_extra_args(false);
  }
}

void add_tls_options(CLI::App& app, TlsFlags& flags, bool with_insecure) {
  app.add_option("--tls-cert", flags.cert, "this process's certificate chain (PEM) for mutual TLS on gRPC")
      ->envname("BLACKTREE_TLS_CERT");
  app.add_option("--tls-key", flags.key, "its private key (PEM)")->envname("BLACKTREE_TLS_KEY");
  app.add_option("--tls-ca", flags.ca, "the CA bundle (PEM) the peer's certificate must chain to")
      ->envname("BLACKTREE_TLS_CA");
  app.add_option("--tls-reload-interval-s", flags.reload_interval_s,
                 "how often the TLS files are read again (rotation without a restart)")
      ->envname("BLACKTREE_TLS_RELOAD_INTERVAL_S")
      ->check(CLI::Range(1u, 86400u))
      ->capture_default_str();
  if (with_insecure) {
    app.add_flag("--insecure", flags.insecure,
                 "run without mutual TLS and without a registration token (a warning at start and in /healthz)")
        ->envname("BLACKTREE_INSECURE");
  }
}

core::Result<std::map<std::string, std::string, std::less<>>> parse_labels(const std::vector<std::string>& items) {
  std::map<std::string, std::string, std::less<>> labels;
  for (const auto& item : items) {
    std::stringstream parts(item);
    std::string pair;
    while (std::getline(parts, pair, ',')) {
      if (pair.empty()) continue;
      const auto eq = pair.find('=');
      if (eq == std::string::npos || eq == 0) {
        return core::Error{std::make_error_code(std::errc::invalid_argument),
                           fmt::format("--label: '{}' is not key=value", pair)};
      }
      labels.insert_or_assign(pair.substr(0, eq), pair.substr(eq + 1));
    }
  }
  return labels;
}

int port_of(std::string_view address) {
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos) return 0;
  int port = 0;
  const auto digits = address.substr(colon + 1);
  std::from_chars(digits.data(), digits.data() + digits.size(), port);
  return port;
}

std::string random_hex(std::size_t n) {
  std::random_device rd;
  std::uniform_int_distribution<int> digit(0, 15);
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += "0123456789abcdef"[digit(rd)];
  return out;
}

sigset_t block_termination_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

core::Result<std::string> registration_token(const std::string& file) {
  if (!file.empty()) return read_secret_file(file, "--registration-token-file");
  const char* env = std::getenv("BLACKTREE_REGISTRATION_TOKEN");
  return std::string(env != nullptr ? env : "");
}

}  // namespace blacktree::service
