// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// The build backend (buildah). It only says which argv to run; the pipeline
// runs them (timeout, cancellation, logging, redaction are its business).

#include <blacktree/worker/build_pipeline.hpp>

#include <blacktree/worker/error.hpp>

#include "netbox.hpp"
#include "util.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>

#include <unistd.h>

namespace blacktree::worker {

namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

core::Error no_digest(std::string why) { return core::Error{errc::no_digest, std::move(why)}; }

// The build options: the worker's build arguments, then the job's (which
// win), its target, labels, secrets.
void append_build_options(std::vector<std::string>& argv, const BuildPipelineConfig& config, const BuildContext& ctx) {
  for (const auto& arg : config.build_args) argv.insert(argv.end(), {"--build-arg", arg});
  for (const auto& [name, value] : ctx.build_args) argv.insert(argv.end(), {"--build-arg", name + "=" + value});
  if (!ctx.target.empty()) argv.insert(argv.end(), {"--target", ctx.target});
  for (const auto& [key, value] : ctx.image_labels) argv.insert(argv.end(), {"--label", key + "=" + value});
  for (const auto& [id, file] : ctx.secrets) {
    argv.insert(argv.end(), {"--secret", fmt::format("id={},src={}", id, file.string())});
  }
}

bool program_exists(const std::string& program) {
  if (program.find('/') != std::string::npos) return ::access(program.c_str(), X_OK) == 0;
  const std::string path = minimal_environment()["PATH"];
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    const std::string candidate = path.substr(start, end - start) + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return true;
    start = end + 1;
  }
  return false;
}

class BuildahBuilder final : public Builder {
 public:
  explicit BuildahBuilder(const BuildPipelineConfig& config) : config_(config) {}

  std::string_view name() const noexcept override { return "buildah"; }

  core::Result<void> available() const override {
    if (!program_exists(config_.buildah_program)) {
      return core::Error{errc::tool_unavailable,
                         fmt::format("'{}' is not installed or not in PATH", config_.buildah_program)};
    }
    return {};
  }

  std::vector<ProcessSpec> pull_commands(const BuildContext& ctx) const override {
    std::ifstream in(ctx.dockerfile, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<ProcessSpec> pulls;
    for (const auto& image : detail::base_images(text)) {
      ProcessSpec spec = base(ctx);
      spec.argv.insert(spec.argv.end(), {"pull", fmt::format("--tls-verify={}", config_.registry_tls_verify)});
      if (!ctx.auth_file.empty()) spec.argv.insert(spec.argv.end(), {"--authfile", ctx.auth_file.string()});
      spec.argv.push_back(image);
      pulls.push_back(std::move(spec));
    }
    return pulls;
  }

  ProcessSpec build_command(const BuildContext& ctx) const override {
    ProcessSpec spec = base(ctx);
    // --pull=false: the base images were pulled just before, outside the
    // box (pull_commands); one whose name needs an ARG is pulled here if missing.
    // --layers: each step's result is kept in the shared store and reused by
    // a later build whose step and inputs are the same. No tag: the image is
    // pushed by its id (--iidfile), so no job's name is left in the store.
    spec.argv.insert(spec.argv.end(), {"bud", "--isolation", config_.buildah_isolation, "--layers", "--force-rm",
                                       "--pull=false",
                                       "--iidfile", image_id_file(ctx).string(),
                                       fmt::format("--tls-verify={}", config_.registry_tls_verify)});
    if (!ctx.auth_file.empty()) spec.argv.insert(spec.argv.end(), {"--authfile", ctx.auth_file.string()});
    append_build_options(spec.argv, config_, ctx);
    if (!config_.layer_cache_repo.empty()) {
      spec.argv.insert(spec.argv.end(),
                       {"--cache-from", config_.layer_cache_repo, "--cache-to", config_.layer_cache_repo});
    }
    // RUN steps in chroot isolation share the build's network (buildah's own
    // --network needs an OCI runtime): the whole build step goes into the box.
    // slirp4netns answers DNS on 10.0.2.3; the host's resolver may be a
    // loopback address the box cannot reach.
    if (config_.build_network == BuildNetwork::private_network) spec.argv.insert(spec.argv.end(), {"--dns", "10.0.2.3"});
    spec.argv.insert(spec.argv.end(), {"-f", ctx.dockerfile.string(), ctx.context_dir.string()});
    return detail::in_network_box(std::move(spec), config_);
  }

  ProcessSpec push_command(const BuildContext& ctx) const override {
    ProcessSpec spec = base(ctx);
    spec.argv.insert(spec.argv.end(), {"push", fmt::format("--tls-verify={}", config_.registry_tls_verify)});
    if (!ctx.auth_file.empty()) spec.argv.insert(spec.argv.end(), {"--authfile", ctx.auth_file.string()});
    // The id the build wrote; a build that wrote none fails the push with
    // buildah's own "image not known" for the path.
    std::string image_id;
    std::ifstream(image_id_file(ctx)) >> image_id;
    if (image_id.empty()) image_id = image_id_file(ctx).string();
    spec.argv.insert(spec.argv.end(), {"--digestfile", ctx.digest_file.string(), image_id,
                                       "docker://" + ctx.image_ref});
    return spec;
  }

  core::Result<std::string> pushed_digest(const BuildContext& ctx) const override {
    std::ifstream in(ctx.digest_file);
    std::string digest;
    if (!std::getline(in, digest)) return no_digest(fmt::format("{} is missing or empty", ctx.digest_file.string()));
    digest = trim(digest);
    if (digest.rfind("sha256:", 0) != 0) {
      return no_digest(fmt::format("{} holds no sha256 digest", ctx.digest_file.string()));
    }
    return digest;
  }

  Store store() const override {
    return Store{store_dir(), driver(), {config_.buildah_program, "--root", (store_dir() / "storage").string(), "--runroot",
                               (store_dir() / "run").string(), "--storage-driver", driver()}};
  }

 private:
  static std::filesystem::path image_id_file(const BuildContext& ctx) { return ctx.job_dir / "image-id"; }

  std::filesystem::path cache_dir() const {
    return config_.cache_dir.empty() ? config_.work_root.parent_path() / "cache" : config_.cache_dir;
  }
  // One store per driver: a store made by one driver cannot be opened by another.
  std::filesystem::path store_dir() const { return cache_dir() / driver(); }

  // The configured driver; "auto" is resolved once, by opening an overlay store.
  const std::string& driver() const {
    std::call_once(driver_once_, [this] {
      driver_ = config_.buildah_storage_driver;
      if (driver_ != "auto") return;
      ProcessSpec probe;
      probe.env = minimal_environment();
      const auto dir = cache_dir() / "overlay";
      probe.argv = {config_.buildah_program, "--root",  (dir / "storage").string(),      "--runroot",
                    (dir / "run").string(),  "--storage-driver", "overlay", "images", "--quiet"};
      probe.timeout = std::chrono::seconds(60);
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      driver_ = !ec && run_process(probe, {}).ok() ? "overlay" : "vfs";
    });
    return driver_;
  }

  ProcessSpec base(const BuildContext& ctx) const {
    ProcessSpec spec;
    spec.env = ctx.env;
    spec.cwd = ctx.job_dir;
    spec.argv = store().argv;
    return spec;
  }

  BuildPipelineConfig config_;  // a copy: the builder must not depend on its creator staying put
  mutable std::once_flag driver_once_;
  mutable std::string driver_;
};

}  // namespace

std::unique_ptr<Builder> make_buildah_builder(const BuildPipelineConfig& config) {
  return std::make_unique<BuildahBuilder>(config);
}

}  // namespace blacktree::worker
