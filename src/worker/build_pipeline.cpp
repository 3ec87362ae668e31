// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
// The sequence of a build job: validate, clone, credentials, build, push,
// clean up. What each step runs and how its failures read are in git.cpp,
// registry_auth.cpp and builders.cpp.
#include <blacktree/worker/build_pipeline.hpp>

#include "git.hpp"
#include "dir_remover.hpp"
#include "image_cache.hpp"
#include "netbox.hpp"
#include "registry_auth.hpp"
#include "util.hpp"

#include <blacktree/worker/job_dir.hpp>
#include <blacktree/worker/log.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <exception>
#include <fstream>
#include <iterator>
#include <map>
#include <system_error>

#include <unistd.h>

namespace blacktree::worker {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

using detail::registry_refused;
using detail::format_duration;
using detail::registry_host;

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

  /// What the build used from the image cache (see CacheKeeper::Use::used).
  std::vector<std::string> cache_used() const { return cache_used_; }
  /// The job's directory once made (empty before): for after_result to remove.
  const fs::path& dir() const noexcept { return dir_; }

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
    end_stage();
    result.stage_durations = stage_durations_;
    result.cached_steps = cached_steps_;
    result.built_steps = steps_ > cached_steps_ ? steps_ - cached_steps_ : 0;
    result.cached_by_step = cached_by_step_;
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
    check(validate_branch(spec.branch));
    check(validate_repo_path("dockerfilePath", dockerfile_path, false));
    check(validate_repo_path("contextDir", context_dir, true));
    check(validate_image_name(spec.image_name));
    check(validate_build_options(spec));
    for (const auto& name : spec.build_secrets) {
      if (!config_.build_secrets.contains(name)) {
        fail(fmt::format("buildSecrets: this worker holds no build secret named '{}' (--build-secret NAME=FILE)", name));
      }
    }
    const auto location = resolve_repo_url(
        spec.repo_url, RepoUrlRules{config_.github_base_url, config_.allow_http_repos, config_.allow_file_repos});
    if (!location) fail(location.error().message());
    if (!spec.github_token.empty()) check(check_token_host(*location, config_.github_base_url, config_.token_hosts));
    if (config_.registry.empty()) fail("worker configuration: no registry is configured to push to");
    if (auto box = detail::check_network_box(config_); !box) fail("worker configuration: " + box.error().message());
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
    check(check_inside_clone("contextDir", clone_root, context_dir, true));
    if (auto inside = check_inside_clone("dockerfilePath", clone_root, dockerfile_path, false); !inside) {
      fail(fmt::format("{} (branch '{}')", inside.error().message(), spec.branch));
    }
    ctx_.context_dir = fs::canonical(clone_root / context_dir);
    ctx_.dockerfile = fs::canonical(clone_root / dockerfile_path);

    // --- credentials, before the build: base images may come from the registry ---
    write_credentials();
    write_mirrors();
    take_build_options();

    // --- build ---
    begin_stage(stage::building);
    for (const auto& pull : builder_.pull_commands(ctx_)) {
      const auto outcome = run_step(stage::building, pull, "base image pull");
      if (outcome.ok()) continue;
      const std::string& image = pull.argv.back();
      if (registry_refused(recent_)) {
        fail(fmt::format("the registry of base image {} refused the worker's credentials ({} {}): {}", image,
                         builder_.name(), outcome.describe(), recent_text()));
      }
      fail(fmt::format("pull of base image {} failed ({} {}); its last output:\n{}", image, builder_.name(),
                       outcome.describe(), recent_text()));
    }
    {
      std::string last_step;
      auto outcome = run_step(stage::building, builder_.build_command(ctx_), "build", &last_step);
      if (!outcome.ok()) {
        if (registry_refused(recent_)) {
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
    auto outcome = run_step(stage::pushing, builder_.push_command(ctx_), "push");
    if (!outcome.ok()) {
      if (registry_refused(recent_)) {
        fail(fmt::format("registry {} refused the push of {}: authentication or authorization failed; check the "
                         "worker's registry credentials ({} {}): {}",
                         registry_host(config_.registry), image_ref, builder_.name(), outcome.describe(),
                         recent_text()));
      }
      fail(fmt::format("push of {} failed ({} {}); its last output:\n{}", image_ref, builder_.name(),
                       outcome.describe(), recent_text()));
    }
    const auto digest = builder_.pushed_digest(ctx_);
    if (!digest) fail(fmt::format("push of {} reported no manifest digest", image_ref));
    result.image_digest = *digest;
    // repository@digest, without the tag: a reference with both is refused
    // by skopeo and containers/image, and the digest alone is exact.
    const auto tag_colon = image_ref.find(':', image_ref.rfind('/'));
    result.image_url = fmt::format("{}@{}", image_ref.substr(0, tag_colon), *digest);
    log_line(stage::pushing, fmt::format("pushed {}", result.image_url));
  }

  [[noreturn]] void fail(std::string error) { throw JobFailure{std::move(error)}; }
  void check(const core::Result<void>& step) {
    if (!step) fail(step.error().message());
  }

  // buildah's "--> Using cache <id>" (a step taken from the cache) and
  // "STEP 1/4: FROM <image> [AS name]" (a base image it needs).
  void note_cache_use(std::string_view line) {
    constexpr std::string_view hit = "--> Using cache ";
    const auto word_at = [&](std::size_t at) { return std::string(line.substr(at, line.find(' ', at) - at)); };
    if (line.rfind(hit, 0) == 0) {
      ++cached_steps_;
      if (!cached_by_step_.empty()) cached_by_step_.back() = true;  // the step just named
      cache_used_.push_back(word_at(hit.size()));
    } else if (line.rfind("STEP ", 0) == 0) {
      const auto from = line.find(": FROM ");
      if (from == std::string_view::npos) {
        ++steps_;
        cached_by_step_.push_back(false);  // ran, unless its "Using cache" follows
      } else {
        cache_used_.push_back(word_at(from + 7));
      }
    }
  }

  void begin_stage(std::string_view stage) {
    end_stage();
    stage_ = stage;
    stage_start_ = Clock::now();
    if (emit_) emit_(stage, {});
  }
  void end_stage() {
    if (stage_.empty()) return;
    stage_durations_[std::string(stage_)] += std::chrono::duration_cast<milliseconds>(Clock::now() - stage_start_);
    stage_ = {};
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
  ProcessOutcome run_step(std::string_view stage, ProcessSpec spec, std::string_view what,
                          std::string* last_step = nullptr) {
    recent_.clear();
    if (stop_.stop_requested()) fail_cancelled(what);
    const auto now = Clock::now();
    if (deadline_ != Clock::time_point::max()) {
      if (now >= deadline_) fail_timed_out(what);
      spec.timeout = std::chrono::duration_cast<milliseconds>(deadline_ - now);
    }
    spec.kill_grace = config_.kill_grace;
    spec.redactor = &redactor_;
    auto outcome = run_process(
        spec,
        [&](std::string_view line) {
          if (last_step != nullptr && line.rfind("STEP ", 0) == 0) *last_step = redactor_.apply(line);
          if (stage == stage::building) note_cache_use(line);
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
    auto dir = worker::make_job_dir(config_.work_root, job_.id);
    if (!dir) fail(dir.error().message());
    dir_ = std::move(*dir);
    ctx_.job_dir = dir_;
    for (const char* sub : {"home", "docker"}) {
      std::error_code ec;
      fs::create_directory(dir_ / sub, ec);
      if (ec) fail(fmt::format("cannot create {}: {}", (dir_ / sub).string(), ec.message()));
    }
  }

  void clone(const RepoLocation& location) {
    const auto outcome = run_step(stage::cloning,
                                  detail::git_clone_command(config_, spec_, location, ctx_.env, dir_, dir_ / "src"),
                                  "clone");
    if (outcome.ok()) {
      check(detail::check_clone_config(dir_ / "src", spec_.github_token));
      return;
    }
    fail(detail::clone_failure(spec_, redactor_.apply(spec_.repo_url), recent_, outcome, recent_text()));
  }

  void take_build_options() {
    ctx_.build_args = spec_.build_args;
    ctx_.target = spec_.target;
    ctx_.image_labels = spec_.image_labels;
    for (const auto& name : spec_.build_secrets) {
      const auto it = config_.build_secrets.find(name);  // there: checked before the clone
      std::ifstream in(it->second, std::ios::binary);
      std::string value((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) {
        fail(fmt::format("worker configuration: cannot read the file of build secret '{}'", name));
      }
      // Also without its final newline, as a RUN step may print it.
      redactor_.add(value);
      while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
      redactor_.add(value);
      ctx_.secrets.emplace(name, it->second);
    }
  }

  void write_credentials() {
    // host -> base64("user:password"): the push registry's, then each pull
    // registry's (a base image's host), in one docker config.json.
    std::map<std::string, std::string> auths;
    const std::string push_host = registry_host(config_.registry);
    if (config_.credentials.kind != RegistryCredentials::Kind::none) {
      auths[push_host] = auth_for(config_.credentials, push_host);
    }
    for (const auto& [host, creds] : config_.pull_credentials) {
      if (creds.kind != RegistryCredentials::Kind::none && host != push_host) auths[host] = auth_for(creds, host);
    }
    if (auths.empty()) return;
    for (const auto& [host, auth] : auths) {
      if (host.find_first_of("\"\\") != std::string::npos) {
        fail(fmt::format("worker configuration: invalid registry host '{}'", host));
      }
    }
    // Docker's config.json format: buildah --authfile reads it.
    ctx_.auth_file = dir_ / "docker" / "config.json";
    check(detail::write_private_file(ctx_.auth_file, detail::docker_config_json(auths)));
  }

  // buildah's registries.conf with the configured mirrors, for this job's
  // pulls (CONTAINERS_REGISTRIES_CONF replaces the host's file, so short
  // names keep resolving through docker.io as they would).
  void write_mirrors() {
    if (config_.registry_mirrors.empty()) return;
    std::string conf = "unqualified-search-registries = [\"docker.io\"]\n";
    for (const auto& [upstream, mirror] : config_.registry_mirrors) {
      conf += fmt::format("\n[[registry]]\nprefix = \"{0}\"\nlocation = \"{0}\"\n\n[[registry.mirror]]\nlocation = "
                          "\"{1}\"\ninsecure = {2}\n",
                          upstream, mirror, config_.registry_tls_verify ? "false" : "true");
    }
    const auto path = dir_ / "registries.conf";
    check(detail::write_private_file(path, conf));
    ctx_.env["CONTAINERS_REGISTRIES_CONF"] = path.string();
  }

  // The base64 "user:password" for `host` from `creds`; the password (and
  // its encodings) join the job's redactor.
  std::string auth_for(const RegistryCredentials& creds, const std::string& host) {
    std::string username;
    std::string password;
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
      ProcessSpec helper = detail::credential_helper_command(creds.helper, ctx_.env, dir_, host);
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
      auto [user, secret] = detail::parse_credential_helper_reply(reply);
      if (secret) redactor_.add(*secret);
      if (!outcome.ok() || !secret || !user) {
        std::string first_line = reply.substr(0, reply.find('\n'));
        // A reply that is not JSON but names a Secret may hold it: not quoted.
        if (!secret && first_line.find("Secret") != std::string::npos) {
          first_line = "(a reply that is not a credentials JSON object; not quoted)";
        }
        fail(fmt::format("credential helper {} gave no credentials for {} ({}): {}", helper.argv.front(), host,
                         outcome.describe(), redactor_.apply(first_line)));
      }
      username = *user;
      password = *secret;
    }
    redactor_.add(password);
    const std::string auth = base64_encode(username + ":" + password);
    redactor_.add(auth);
    return auth;
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
  std::vector<std::string> cache_used_;
  std::string_view stage_;
  Clock::time_point stage_start_;
  std::map<std::string, milliseconds> stage_durations_;
  std::uint32_t steps_ = 0;
  std::uint32_t cached_steps_ = 0;
  std::vector<bool> cached_by_step_;  // per step after FROM
  milliseconds limit_{0};
  Clock::time_point deadline_;
  fs::path dir_;
  BuildContext ctx_;
};

}  // namespace

BuildPipelineRunner::BuildPipelineRunner(BuildPipelineConfig config)
    : config_(std::move(config)),
      builder_(make_buildah_builder(config_)),
      remover_(std::make_unique<detail::DirRemover>(config_.on_event)) {}

BuildPipelineRunner::~BuildPipelineRunner() {
  // Directories whose after_result never came go too; remover_ finishes
  // every removal before it is destroyed.
  std::lock_guard lock(finished_mutex_);
  for (auto& [id, dir] : finished_dirs_) remover_->remove(std::move(dir));
}

std::string BuildPipelineRunner::storage() const {
  const auto store = builder_->store();
  return fmt::format("{} image cache in {}", store.driver, store.dir.string());
}

detail::CacheKeeper* BuildPipelineRunner::cache() const {
  // Made on first use: finding the store may run the builder (storage driver "auto").
  std::call_once(cache_once_, [this] {
    if (config_.cache_max_bytes == 0 && config_.cache_min_free_bytes == 0) return;
    cache_ = std::make_unique<detail::CacheKeeper>(config_, builder_->store());
  });
  return cache_.get();
}

BuildPipelineRunner::CacheStats BuildPipelineRunner::cache_stats() const {
  const auto* keeper = cache();
  return keeper ? keeper->stats() : CacheStats{};
}

void BuildPipelineRunner::settle() const {
  remover_->settle();
  if (const auto* keeper = cache()) keeper->settle();
}

void BuildPipelineRunner::after_result(const core::Job& job) noexcept {
  std::lock_guard lock(finished_mutex_);
  if (auto found = finished_dirs_.find(job.id); found != finished_dirs_.end()) {
    remover_->remove(std::move(found->second));
    finished_dirs_.erase(found);
  }
}

core::Result<void> BuildPipelineRunner::check() const {
  const auto misconfigured = [](std::string why) { return core::Error{errc::misconfigured, std::move(why)}; };
  if (config_.registry.empty()) {
    return misconfigured("registry: not set (the host[:port][/prefix] images are pushed to)");
  }
  if (auto available = builder_->available(); !available) {
    return core::Error{errc::tool_unavailable,
                       fmt::format("builder {}: {}", builder_->name(), available.error().message())};
  }
  if (auto box = detail::check_network_box(config_); !box) return box;
  // A tool that answers --version is installed and runs.
  const auto runs = [](const std::string& program, std::string_view setting) -> core::Result<void> {
    ProcessSpec probe;
    probe.argv = {program, "--version"};
    probe.env = minimal_environment();
    probe.timeout = std::chrono::seconds(30);
    if (const auto outcome = run_process(probe, {}); !outcome.ok()) {
      return core::Error{errc::tool_unavailable, fmt::format("{} '{}': {}", setting, program, outcome.describe())};
    }
    return {};
  };
  if (auto box = detail::probe_network_box(config_); !box) return box;
  if (auto git = runs(config_.git_program, "git_program"); !git) return git;
  std::error_code ec;
  fs::create_directories(config_.work_root, ec);
  if (ec || ::access(config_.work_root.c_str(), W_OK | X_OK) != 0) {
    return core::Error{errc::io_failed, fmt::format("work_root {}: cannot create or write to it{}",
                                                    config_.work_root.string(), ec ? ": " + ec.message() : "")};
  }
  const auto plain = [](const std::string& s) {
    return !s.empty() && std::none_of(s.begin(), s.end(), [](char c) {
      return c == '"' || c == '\\' || static_cast<unsigned char>(c) <= ' ' || c == 0x7f;
    });
  };
  for (const auto& [upstream, mirror] : config_.registry_mirrors) {
    if (!plain(upstream) || !plain(mirror)) {
      return misconfigured("registry_mirrors: each upstream and mirror must be a registry host[:port][/prefix]");
    }
  }
  for (const auto& [host, creds] : config_.pull_credentials) {
    if (!plain(host)) return misconfigured("pull_credentials: each key must be a registry host[:port]");
    if (creds.kind == RegistryCredentials::Kind::static_password &&
        (creds.username.empty() || ::access(creds.password_file.c_str(), R_OK) != 0)) {
      return misconfigured(fmt::format("pull_credentials for {}: a username and a readable password file", host));
    }
    if (creds.kind == RegistryCredentials::Kind::helper && creds.helper.empty()) {
      return misconfigured(fmt::format("pull_credentials for {}: kind helper needs a helper name", host));
    }
  }
  for (const auto& [name, file] : config_.build_secrets) {
    if (::access(file.c_str(), R_OK) != 0) {
      return misconfigured(fmt::format("build_secrets: cannot read the file of build secret '{}'", name));
    }
  }
  const auto& creds = config_.credentials;
  if (creds.kind == RegistryCredentials::Kind::static_password) {
    if (creds.username.empty()) return misconfigured("credentials: a static password needs a username");
    if (::access(creds.password_file.c_str(), R_OK) != 0) {
      return misconfigured(fmt::format("credentials: cannot read password_file {}", creds.password_file.string()));
    }
  }
  if (creds.kind == RegistryCredentials::Kind::helper && creds.helper.empty()) {
    return misconfigured("credentials: kind helper needs a helper name (docker-credential-<name>)");
  }
  return {};
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
    remover_->wait_for_space(config_.work_root, config_.cache_min_free_bytes);
    std::optional<detail::CacheKeeper::Use> use;
    if (auto* keeper = cache()) use.emplace(*keeper);
    PipelineJob pipeline_job(config_, *builder_, job, *spec, emit, std::move(stop));
    auto result = pipeline_job.run();
    if (use) {
      use->used = pipeline_job.cache_used();
      use->clean = result.success;
    }
    if (!pipeline_job.dir().empty() && !config_.keep_job_dir) {
      std::lock_guard lock(finished_mutex_);
      // A directory of the same id still here was never handed to after_result: it goes now.
      auto [slot, fresh] = finished_dirs_.try_emplace(job.id, pipeline_job.dir());
      if (!fresh) {
        remover_->remove(std::move(slot->second));
        slot->second = pipeline_job.dir();
      }
    }
    return result;
  } catch (const std::exception& e) {  // run() must never throw
    core::JobResult result;
    result.job_id = job.id;
    result.error = fmt::format("internal error in the build pipeline: {}", e.what());
    return result;
  }
}

}  // namespace blacktree::worker
