// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/build_pipeline.hpp>

#include <blacktree/worker/log.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <fstream>
#include <sstream>
#include <system_error>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

namespace blacktree::worker {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string format_duration(milliseconds d) {
  const auto s = d.count() / 1000;
  if (d.count() % 1000 != 0) return fmt::format("{:.1f}s", static_cast<double>(d.count()) / 1000.0);
  if (s % 60 == 0 && s >= 60) return fmt::format("{}m", s / 60);
  return fmt::format("{}s", s);
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

bool any_line_contains(const std::deque<std::string>& lines, std::initializer_list<std::string_view> needles) {
  for (const auto& line : lines) {
    for (auto n : needles) {
      if (contains(line, n)) return true;
    }
  }
  return false;
}

// The value of `"key": "..."` in a flat JSON object (a credential helper's
// reply); enough JSON for that one purpose.
std::optional<std::string> json_string_field(std::string_view json, std::string_view key) {
  const std::string quoted = fmt::format("\"{}\"", key);
  std::size_t pos = json.find(quoted);
  if (pos == std::string_view::npos) return std::nullopt;
  pos = json.find(':', pos + quoted.size());
  if (pos == std::string_view::npos) return std::nullopt;
  pos = json.find('"', pos + 1);
  if (pos == std::string_view::npos) return std::nullopt;
  std::string out;
  for (std::size_t i = pos + 1; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '"') return out;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= json.size()) return std::nullopt;
    switch (json[i]) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'u': {
        if (i + 4 >= json.size()) return std::nullopt;
        const unsigned code = static_cast<unsigned>(std::stoul(std::string(json.substr(i + 1, 4)), nullptr, 16));
        i += 4;
        if (code < 0x80) {
          out += static_cast<char>(code);
        } else if (code < 0x800) {
          out += static_cast<char>(0xC0 | (code >> 6));
          out += static_cast<char>(0x80 | (code & 0x3F));
        } else {
          out += static_cast<char>(0xE0 | (code >> 12));
          out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
          out += static_cast<char>(0x80 | (code & 0x3F));
        }
        break;
      }
      default: out += json[i];  // \" \\ \/
    }
  }
  return std::nullopt;
}

// Creates `path` with mode 0600 and `content`; fails if it exists.
std::optional<std::string> write_private_file(const fs::path& path, std::string_view content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fmt::format("cannot create {}: {}", path.string(), std::strerror(errno));
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string err = std::strerror(errno);
      ::close(fd);
      return fmt::format("cannot write {}: {}", path.string(), err);
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return std::nullopt;
}

std::string registry_host(std::string_view registry) { return std::string(registry.substr(0, registry.find('/'))); }

// Thrown inside run() only, caught there: a step that ends the job.
struct JobFailure {
  std::string error;
};

// One job's state: its directory, what it has printed, its secrets.
class PipelineJob {
 public:
  PipelineJob(const BuildPipelineConfig& config, const Builder& builder, const core::Job& job, const BuildSpec& spec,
              const EmitFn& emit, std::stop_token stop)
      : config_(config), builder_(builder), job_(job), spec_(spec), emit_(emit), stop_(std::move(stop)),
        tail_(config.log_tail_bytes) {
    redactor_.add(spec.github_token.reveal());
    const milliseconds limit = job.timeout.count() > 0 && (config.default_timeout.count() == 0 ||
                                                           job.timeout < config.default_timeout)
                                   ? job.timeout
                                   : config.default_timeout;
    limit_ = limit;
    deadline_ = limit.count() > 0 ? Clock::now() + limit : Clock::time_point::max();
  }

  core::JobResult run() {
    core::JobResult result;
    result.job_id = job_.id;
    try {
      execute(result);
      result.success = true;
    } catch (const JobFailure& failure) {
      result.success = false;
      result.error = failure.error;
    } catch (const std::exception& e) {
      result.success = false;
      result.error = fmt::format("internal error in the build pipeline: {}", e.what());
    }
    cleanup();
    result.logs = tail_.text();
    result.error = redactor_.apply(result.error);
    if (!result.success) {
      result.image_url.clear();
      result.image_digest.clear();
    }
    return result;
  }

 private:
  void execute(core::JobResult& result) {
    const auto& spec = spec_;
    // --- validation: before anything runs ---
    const std::string context_dir = spec.context_dir.empty() ? "." : spec.context_dir;
    const std::string dockerfile_path =
        !spec.dockerfile_path.empty() ? spec.dockerfile_path
                                      : (context_dir == "." ? std::string("Dockerfile") : context_dir + "/Dockerfile");
    if (job_.id.empty()) fail("jobId: must not be empty");
    if (auto e = validate_branch(spec.branch)) fail(*e);
    if (auto e = validate_repo_path("dockerfilePath", dockerfile_path, false)) fail(*e);
    if (auto e = validate_repo_path("contextDir", context_dir, true)) fail(*e);
    if (auto e = validate_image_name(spec.image_name)) fail(*e);
    std::string url_error;
    const auto location = resolve_repo_url(
        spec.repo_url, RepoUrlRules{config_.github_base_url, config_.allow_http_repos, config_.allow_file_repos},
        url_error);
    if (!location) fail(url_error);
    if (config_.registry.empty()) fail("worker configuration: no registry is configured to push to");
    std::string image_ref = fmt::format("{}/{}", config_.registry, spec.image_name);
    if (spec.image_name.find(':') == std::string::npos) image_ref += ":latest";

    make_job_dir();
    ctx_.image_ref = image_ref;
    ctx_.digest_file = dir_ / "digest";
    ctx_.env = minimal_environment(dir_ / "home");

    // --- clone ---
    begin_stage(stage::cloning);
    clone(*location);
    const fs::path clone_root = dir_ / "src";
    if (auto e = check_inside_clone("contextDir", clone_root, context_dir, true)) fail(*e);
    if (auto e = check_inside_clone("dockerfilePath", clone_root, dockerfile_path, false)) {
      fail(fmt::format("{} (branch '{}')", *e, spec.branch));
    }
    ctx_.context_dir = fs::canonical(clone_root / context_dir);
    ctx_.dockerfile = fs::canonical(clone_root / dockerfile_path);

    // --- credentials, before the build: base images may come from the registry ---
    write_credentials();

    // --- build ---
    begin_stage(stage::building);
    {
      std::string last_step;
      auto outcome = run_step(stage::building, builder_.build_command(ctx_), "build", &last_step);
      if (!outcome.ok()) {
        if (any_line_contains(recent_, {"unauthorized", "authentication required"})) {
          fail(fmt::format("registry {} refused the worker's credentials while pulling a base image ({} {}): {}",
                           registry_host(config_.registry), builder_.name(), outcome.describe(), recent_text()));
        }
        fail(fmt::format("build step failed{} ({} {}); its last output:\n{}",
                         last_step.empty() ? "" : fmt::format(" at {}", last_step), builder_.name(),
                         outcome.describe(), recent_text()));
      }
    }

    // --- push ---
    begin_stage(stage::pushing);
    std::vector<std::string> push_output;
    auto outcome = run_step(stage::pushing, builder_.push_command(ctx_), "push", nullptr, &push_output);
    if (!outcome.ok()) {
      if (any_line_contains(recent_, {"unauthorized", "authentication required", "denied", "401", "403"})) {
        fail(fmt::format("registry {} refused the push of {}: authentication or authorization failed; check the "
                         "worker's registry credentials ({} {}): {}",
                         registry_host(config_.registry), image_ref, builder_.name(), outcome.describe(),
                         recent_text()));
      }
      fail(fmt::format("push of {} failed ({} {}); its last output:\n{}", image_ref, builder_.name(),
                       outcome.describe(), recent_text()));
    }
    const auto digest = builder_.pushed_digest(ctx_, push_output);
    if (!digest) fail(fmt::format("push of {} reported no manifest digest", image_ref));
    result.image_digest = *digest;
    // repository@digest, without the tag: a reference with both is refused
    // by skopeo and containers/image, and the digest alone is exact.
    const auto tag_colon = image_ref.find(':', image_ref.rfind('/'));
    result.image_url = fmt::format("{}@{}", image_ref.substr(0, tag_colon), *digest);
    log_line(stage::pushing, fmt::format("pushed {}", result.image_url));
  }

  [[noreturn]] void fail(std::string error) { throw JobFailure{std::move(error)}; }

  void begin_stage(std::string_view stage) {
    if (emit_) emit_(stage, {});
  }

  void log_line(std::string_view stage, std::string_view raw) {
    const std::string line = redactor_.apply(raw);
    tail_.append(line);
    recent_.push_back(line);
    while (recent_.size() > std::max<std::size_t>(config_.error_output_lines, 1)) recent_.pop_front();
    if (emit_) emit_(stage, line);
  }

  std::string recent_text() const {
    std::string out;
    for (const auto& l : recent_) {
      if (!out.empty()) out += '\n';
      out += l;
    }
    return out;
  }

  // Runs one tool within the job's deadline; a timeout or cancel ends the job.
  ProcessOutcome run_step(std::string_view stage, ProcessSpec spec, std::string_view what, std::string* last_step = nullptr,
                          std::vector<std::string>* output = nullptr) {
    recent_.clear();
    if (stop_.stop_requested()) fail_cancelled(what);
    const auto now = Clock::now();
    if (deadline_ != Clock::time_point::max()) {
      if (now >= deadline_) fail_timed_out(what);
      spec.timeout = std::chrono::duration_cast<milliseconds>(deadline_ - now);
    }
    spec.kill_grace = config_.kill_grace;
    auto outcome = run_process(
        spec,
        [&](std::string_view line) {
          if (last_step != nullptr && line.rfind("STEP ", 0) == 0) *last_step = redactor_.apply(line);
          if (output != nullptr) output->emplace_back(line);
          log_line(stage, line);
        },
        stop_);
    if (outcome.end == ProcessOutcome::End::timed_out) fail_timed_out(what);
    if (outcome.end == ProcessOutcome::End::cancelled) fail_cancelled(what);
    if (outcome.end == ProcessOutcome::End::failed_to_start) {
      fail(fmt::format("{} could not start: {}", what, outcome.error));
    }
    return outcome;
  }

  [[noreturn]] void fail_timed_out(std::string_view what) {
    fail(fmt::format("job timed out after {} during the {} (the job's timeout, at most the worker's default {}); "
                     "its processes were killed",
                     format_duration(limit_), what, format_duration(config_.default_timeout)));
  }
  [[noreturn]] void fail_cancelled(std::string_view what) {
    fail(fmt::format("job cancelled during the {}; its processes were killed", what));
  }

  void make_job_dir() {
    std::error_code ec;
    fs::create_directories(config_.work_root, ec);
    if (ec) fail(fmt::format("worker configuration: cannot create work_root {}: {}", config_.work_root.string(), ec.message()));
    std::string safe_id;
    for (char c : job_.id) {
      if (safe_id.size() >= 40) break;
      safe_id += (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_') ? c : '_';
    }
    std::string templ = (config_.work_root / fmt::format("job-{}-XXXXXX", safe_id)).string();
    if (::mkdtemp(templ.data()) == nullptr) {
      fail(fmt::format("cannot create a job directory under {}: {}", config_.work_root.string(), std::strerror(errno)));
    }
    dir_ = templ;  // mkdtemp made it 0700
    ctx_.job_dir = dir_;
    for (const char* sub : {"home", "storage", "run", "docker"}) {
      fs::create_directory(dir_ / sub, ec);
      if (ec) fail(fmt::format("cannot create {}: {}", (dir_ / sub).string(), ec.message()));
    }
  }

  void clone(const RepoLocation& location) {
    const auto& spec = spec_;
    ProcessSpec git;
    git.env = ctx_.env;
    git.cwd = dir_;
    // No prompts (a missing token must fail, not hang), no system or user
    // configuration (a credential helper there could store the token), and
    // only the allowed protocols, also for redirects and submodules.
    git.env["GIT_TERMINAL_PROMPT"] = "0";
    git.env["GIT_CONFIG_NOSYSTEM"] = "1";
    git.env["GIT_CONFIG_GLOBAL"] = "/dev/null";
    std::string protocols = "https";
    if (config_.allow_http_repos) protocols += ":http";
    if (config_.allow_file_repos) protocols += ":file";
    git.env["GIT_ALLOW_PROTOCOL"] = protocols;
    if (!spec.github_token.empty() && !location.origin.empty()) {
      // The token travels as an HTTP header set through the environment
      // (git >= 2.31), scoped to the repository's origin: not in argv, not in
      // the URL, not in .git/config.
      git.env["GIT_CONFIG_COUNT"] = "1";
      git.env["GIT_CONFIG_KEY_0"] = fmt::format("http.{}.extraHeader", location.origin);
      git.env["GIT_CONFIG_VALUE_0"] =
          fmt::format("Authorization: Basic {}", base64_encode("x-access-token:" + spec.github_token.reveal()));
    }
    git.argv = {config_.git_program, "clone",          "--depth=1", "--single-branch", "--no-tags",
                "--branch",          spec.branch,       "--",        location.url,      (dir_ / "src").string()};
    const auto outcome = run_step(stage::cloning, std::move(git), "clone");
    if (outcome.ok()) {
      check_clone_config();
      return;
    }
    const std::string repo = redactor_.apply(spec.repo_url);
    if (any_line_contains(recent_, {"Remote branch", "not found in upstream"})) {
      fail(fmt::format("branch '{}' not found in repository {}", spec.branch, repo));
    }
    if (any_line_contains(recent_, {"Authentication failed", "could not read Username", "returned error: 401",
                                    "returned error: 403", "terminal prompts disabled"})) {
      fail(fmt::format("access to repository {} was refused: the githubToken is {} (git {})", repo,
                       spec.github_token.empty() ? "missing" : "wrong or lacks read access", outcome.describe()));
    }
    if (any_line_contains(recent_, {"not found", "returned error: 404", "does not appear to be a git repository"})) {
      fail(fmt::format("repository {} not found (git {}): {}", repo, outcome.describe(), recent_text()));
    }
    fail(fmt::format("git clone of {} failed ({}): {}", repo, outcome.describe(), recent_text()));
  }

  // Belt and braces: the token must not have reached the clone's config.
  void check_clone_config() {
    const auto& token = spec_.github_token.reveal();
    if (token.empty()) return;
    std::ifstream in(dir_ / "src" / ".git" / "config");
    std::stringstream content;
    content << in.rdbuf();
    Redactor only_token;
    only_token.add(token);
    if (only_token.apply(content.str()) != content.str()) {
      fail("internal error: the githubToken reached the clone's .git/config; the job was stopped");
    }
  }

  void write_credentials() {
    const auto& creds = config_.credentials;
    if (creds.kind == RegistryCredentials::Kind::none) return;
    std::string username;
    std::string password;
    const std::string host = registry_host(config_.registry);
    if (creds.kind == RegistryCredentials::Kind::static_password) {
      std::ifstream in(creds.password_file);
      if (!in) {
        fail(fmt::format("worker configuration: cannot read the registry password file {}",
                         creds.password_file.string()));
      }
      std::getline(in, password);
      if (!password.empty() && password.back() == '\r') password.pop_back();
      username = creds.username;
    } else {
      const bool name_ok = !creds.helper.empty() && std::all_of(creds.helper.begin(), creds.helper.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
      });
      if (!name_ok) fail(fmt::format("worker configuration: invalid credential helper name '{}'", creds.helper));
      ProcessSpec helper;
      helper.argv = {fmt::format("docker-credential-{}", creds.helper), "get"};
      helper.env = ctx_.env;
      // The helper is the operator's tool, not the job's: it gets the worker's
      // HOME (docker-credential-ecr-login reads ~/.aws, caches in ~/.ecr) and
      // the AWS settings of the worker's environment.
      if (const char* home = std::getenv("HOME"); home != nullptr) helper.env["HOME"] = home;
      for (const char* var : {"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE",
                              "AWS_SHARED_CREDENTIALS_FILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                              "AWS_SESSION_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_ECR_CACHE_DIR",
                              "AWS_ECR_DISABLE_CACHE"}) {
        if (const char* v = std::getenv(var); v != nullptr) helper.env[var] = v;
      }
      helper.cwd = dir_;
      helper.input = host + "\n";
      helper.kill_grace = config_.kill_grace;
      const auto now = Clock::now();
      helper.timeout = deadline_ == Clock::time_point::max()
                           ? milliseconds(std::chrono::minutes(2))
                           : std::chrono::duration_cast<milliseconds>(std::max(deadline_ - now, Clock::duration(1)));
      // The reply holds the secret: it is parsed, never logged.
      std::string reply;
      const auto outcome = run_process(helper, [&](std::string_view l) { reply.append(l).append("\n"); }, stop_);
      if (outcome.end == ProcessOutcome::End::cancelled) fail_cancelled("credential helper");
      if (outcome.end == ProcessOutcome::End::timed_out) fail_timed_out("credential helper");
      auto secret = json_string_field(reply, "Secret");
      auto user = json_string_field(reply, "Username");
      if (secret) redactor_.add(*secret);
      if (!outcome.ok() || !secret || !user) {
        std::string first_line = reply.substr(0, reply.find('\n'));
        fail(fmt::format("credential helper {} gave no credentials for {} ({}): {}", helper.argv.front(), host,
                         outcome.describe(), redactor_.apply(first_line)));
      }
      username = *user;
      password = *secret;
    }
    redactor_.add(password);
    const std::string auth = base64_encode(username + ":" + password);
    redactor_.add(auth);
    // Docker's config.json format: buildah --authfile and DOCKER_CONFIG read it.
    ctx_.auth_file = dir_ / "docker" / "config.json";
    std::string json_user_host;
    for (char c : host) {
      if (c == '"' || c == '\\') fail(fmt::format("worker configuration: invalid registry '{}'", config_.registry));
      json_user_host += c;
    }
    if (auto e = write_private_file(ctx_.auth_file, fmt::format(R"({{"auths":{{"{}":{{"auth":"{}"}}}}}})",
                                                                json_user_host, auth))) {
      fail(*e);
    }
  }

  void cleanup() {
    if (dir_.empty()) return;
    // Not tied to the job's stop token: a cancelled job is cleaned up too.
    for (auto spec : builder_.cleanup_commands(ctx_)) {
      spec.timeout = std::chrono::minutes(2);
      spec.kill_grace = config_.kill_grace;
      std::string output;
      const auto outcome = run_process(spec, [&](std::string_view l) { output.append(l).append("\n"); });
      if (!outcome.ok() && builder_.name() != "buildah") {  // buildah: the storage goes with the directory anyway
        tail_.append(redactor_.apply(fmt::format("warning: cleanup '{} {}' {}: {}", spec.argv.front(),
                                                 spec.argv.size() > 1 ? spec.argv[1] : "", outcome.describe(), output)));
      }
    }
    if (config_.keep_job_dir) return;
    std::error_code ec;
    fs::remove_all(dir_, ec);
    if (ec) {
      tail_.append(fmt::format("warning: could not remove the job directory {}: {}", dir_.string(), ec.message()));
    }
  }

  const BuildPipelineConfig& config_;
  const Builder& builder_;
  const core::Job& job_;
  const BuildSpec& spec_;
  const EmitFn& emit_;
  std::stop_token stop_;
  Redactor redactor_;
  LogTail tail_;
  std::deque<std::string> recent_;  // the current step's last lines, for errors
  milliseconds limit_{0};
  Clock::time_point deadline_;
  fs::path dir_;
  BuildContext ctx_;
};

}  // namespace

BuildPipelineRunner::BuildPipelineRunner(BuildPipelineConfig config)
    : config_(std::move(config)),
      builder_(config_.builder == BuilderKind::docker ? make_docker_builder(config_) : make_buildah_builder(config_)) {}

std::optional<std::string> BuildPipelineRunner::check() const {
  if (config_.registry.empty()) return "registry: not set (the host[:port][/prefix] images are pushed to)";
  if (auto reason = builder_->unavailable_reason()) return fmt::format("builder {}: {}", builder_->name(), *reason);
  ProcessSpec git;
  git.argv = {config_.git_program, "--version"};
  git.env = minimal_environment();
  git.timeout = std::chrono::seconds(30);
  if (const auto outcome = run_process(git, {}); !outcome.ok()) {
    return fmt::format("git_program '{}': {}", config_.git_program, outcome.describe());
  }
  std::error_code ec;
  fs::create_directories(config_.work_root, ec);
  if (ec || ::access(config_.work_root.c_str(), W_OK | X_OK) != 0) {
    return fmt::format("work_root {}: cannot create or write to it{}", config_.work_root.string(),
                       ec ? ": " + ec.message() : "");
  }
  const auto& creds = config_.credentials;
  if (creds.kind == RegistryCredentials::Kind::static_password) {
    if (creds.username.empty()) return "credentials: a static password needs a username";
    if (::access(creds.password_file.c_str(), R_OK) != 0) {
      return fmt::format("credentials: cannot read password_file {}", creds.password_file.string());
    }
  }
  if (creds.kind == RegistryCredentials::Kind::helper && creds.helper.empty()) {
    return "credentials: kind helper needs a helper name (docker-credential-<name>)";
  }
  return std::nullopt;
}

core::JobResult BuildPipelineRunner::run(const core::Job& job, const EmitFn& emit, std::stop_token stop) {
  const auto* spec = job.payload.get<BuildSpec>();
  if (spec == nullptr) {
    core::JobResult result;
    result.job_id = job.id;
    result.error = "the job carries no build (its payload is not a worker::BuildSpec): this worker runs build jobs only";
    return result;
  }
  try {
    PipelineJob pipeline_job(config_, *builder_, job, *spec, emit, std::move(stop));
    return pipeline_job.run();
  } catch (const std::exception& e) {  // run() must never throw
    core::JobResult result;
    result.job_id = job.id;
    result.error = fmt::format("internal error in the build pipeline: {}", e.what());
    return result;
  }
}

}  // namespace blacktree::worker
