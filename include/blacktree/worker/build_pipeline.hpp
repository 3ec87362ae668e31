// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// What blacktree's worker exists for: clone a repository, build an image from
// its Dockerfile, push it to a registry, report, clean up, without a secret
// ever reaching argv, a URL, the clone's .git/config, the image or the logs.
//
// Every job gets a fresh directory (mode 0700) under `work_root`:
//   home/      HOME and TMPDIR of every tool (no user or system config leaks in)
//   src/       the shallow clone
//   docker/config.json  registry credentials for this job (0600), docker's
//              format (buildah --authfile reads it)
//   image-id, digest    what the build and the push wrote
// It is removed once the result is out (after_result), success or failure.
// The image store is shared by the worker's jobs and kept (cache_dir).

#include <blacktree/core/result.hpp>
#include <blacktree/worker/build_spec.hpp>
#include <blacktree/worker/error.hpp>
#include <blacktree/worker/job_runner.hpp>
#include <blacktree/worker/process.hpp>
#include <blacktree/worker/validation.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::worker {

namespace detail {
class CacheKeeper;
class DirRemover;
}

/// How the worker authenticates to its registry.
struct RegistryCredentials {
  enum class Kind {
    none,             ///< anonymous push
    static_password,  ///< `username` + the password read from `password_file` at each job
    helper,           ///< `docker-credential-<helper> get` (e.g. helper "ecr-login" for AWS ECR)
  };
  Kind kind = Kind::none;
  std::string username;                 ///< static_password
  std::filesystem::path password_file;  ///< static_password: one line; a trailing newline is ignored
  std::string helper;                   ///< helper: the part after "docker-credential-"
};

/// The network a build's RUN steps get (the build step as a whole; the
/// clone, the base images' pulls and the push run outside it, on the
/// worker's network).
enum class BuildNetwork {
  /// No network at all, loopback only.
  none,
  /// A network namespace of its own whose traffic leaves through slirp4netns
  /// (user-mode NAT, as the worker's own connections): outbound access to
  /// what the worker host can reach, but no route to the host's loopback, its
  /// own addresses, link-local addresses (169.254.169.254, the cloud metadata
  /// service) or `build_network_blocked`. The default. Needs
  /// slirp4netns (and, rootless, a subordinate id range).
  private_network,
  /// The worker's own network, loopback included: RUN steps can reach the
  /// worker's gRPC port, local services and the metadata service. Trusted
  /// Dockerfiles only.
  host,
};

/// Everything a BuildPipelineRunner needs; the worker service fills it from
/// YAML, environment and flags. Defaults are for production on a Linux host
/// where the worker runs as root.
struct BuildPipelineConfig {
  // --- where jobs run ---
  /// Per-job directories are created (and removed) under it. Created if missing.
  std::filesystem::path work_root = "/var/lib/blacktree/jobs";
  /// The image store this worker's jobs share (buildah): base images and the
  /// layers of earlier builds (`--layers`), kept between jobs so that a
  /// rebuild pulls nothing and re-runs only the steps that changed. One store
  /// per storage driver below it. Empty: `cache` beside work_root.
  std::filesystem::path cache_dir;
  /// The cache's budget: after a job, when the store is larger than this, or
  /// the file system holding it has less than cache_min_free_bytes free, the
  /// least recently used images are removed until it fits (80% of the
  /// budget). A prune never runs beside a build: it waits for the running
  /// builds to end, and jobs that start meanwhile wait for it. 0: no budget.
  std::uint64_t cache_max_bytes = std::uint64_t{20} << 30;
  std::uint64_t cache_min_free_bytes = std::uint64_t{2} << 30;
  /// Told what the runner did between jobs (a prune, a failure to measure or
  /// prune the cache, a job directory it could not remove), for the worker's
  /// log. May be called from a thread of the runner's own.
  std::function<void(std::string_view)> on_event;

  // --- clone ---
  /// Base for `owner/name` repoUrls (GitHub Enterprise: https://ghe.example.com).
  std::string github_base_url = "https://github.com";
  /// Also accept http:// repoUrls (tests, trusted networks only).
  bool allow_http_repos = false;
  /// Also accept file:// repoUrls (tests only).
  bool allow_file_repos = false;
  /// Hosts besides the GitHub base URL's that a job's githubToken may be sent
  /// to: "host" (any port) or "host:port". A job with a token whose repoUrl
  /// names any other host fails before a connection is made.
  std::vector<std::string> token_hosts;
  std::string git_program = "git";

  // --- build ---
  std::string buildah_program = "buildah";
  /// buildah --storage-driver: "overlay" (fast: a layer is not copied),
  /// "vfs" (works everywhere, containers included, but copies every layer), or
  /// "auto": overlay where this host allows it, else vfs.
  std::string buildah_storage_driver = "auto";
  /// buildah --isolation for RUN steps: "chroot" needs no OCI runtime and
  /// works inside containers; "oci" uses runc/crun.
  std::string buildah_isolation = "chroot";
  /// See BuildNetwork.
  BuildNetwork build_network = BuildNetwork::private_network;
  /// More destinations (address or CIDR, IPv4) a `private` build has no route
  /// to, e.g. the host's own LAN or VPC ranges.
  std::vector<std::string> build_network_blocked;
  std::string slirp4netns_program = "slirp4netns";
  /// --build-arg KEY=VALUE passed to every build (not secrets: they would end
  /// up in the image history).
  std::vector<std::string> build_args;
  /// Build secrets a job may ask for by name (JobRequest buildSecrets): name
  /// -> the file holding the value. A RUN step mounts one with
  /// `--mount=type=secret,id=NAME`; the value never enters the image, and is
  /// redacted from the logs.
  std::map<std::string, std::filesystem::path> build_secrets;

  // --- push ---
  /// Registry host[:port], optionally with a path prefix
  /// ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "127.0.0.1:5000/team").
  /// The image is pushed to `<registry>/<imageName>`. Required.
  std::string registry;
  /// Verify the registry's TLS certificate (false also allows plain http; tests only).
  bool registry_tls_verify = true;
  RegistryCredentials credentials;
  /// Credentials for pulling base images, per registry host ("host[:port]"),
  /// besides the push registry's (`credentials`, used for its own host):
  /// a private upstream or mirror. Same kinds and helpers as the push.
  std::map<std::string, RegistryCredentials> pull_credentials;
  /// Mirrors of upstream registries for base images: upstream host (e.g.
  /// "docker.io") -> mirror "host[:port][/prefix]", tried first (buildah's
  /// registries.conf). A mirror over plain HTTP needs registry_tls_verify false.
  std::map<std::string, std::string> registry_mirrors;
  /// A registry repository ("host[:port]/path") that holds build-step layers
  /// for the whole fleet: each build pushes the steps it ran there and looks
  /// there for the ones it lacks (buildah --cache-to/--cache-from), so a new
  /// worker starts warm. Empty: each worker's own cache only. The build
  /// reaches it from inside its network box: under `private` it must not be
  /// on the worker host's own addresses. Credentials: the push registry's,
  /// or pull_credentials for its host.
  std::string layer_cache_repo;

  // --- limits and reporting ---
  /// Whole-job limit when the job gives none (Job::timeout 0); a job may ask
  /// for less, not more.
  std::chrono::milliseconds default_timeout{std::chrono::minutes(30)};
  /// SIGTERM-to-SIGKILL grace for a cancelled or timed-out tool.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};
  /// JobResult::logs keeps at most this many bytes of the newest output.
  std::size_t log_tail_bytes = 64 * 1024;
  /// Lines of a failed step's output quoted in JobResult::error.
  std::size_t error_output_lines = 15;
  /// Keep the job directory after the job (debugging only: it holds the
  /// per-job credentials file until removed by hand).
  bool keep_job_dir = false;
};

/// What a builder backend needs for one job. Paths are absolute and validated.
struct BuildContext {
  std::filesystem::path job_dir;
  std::filesystem::path context_dir;
  std::filesystem::path dockerfile;
  std::string image_ref;               ///< registry/name:tag: built under, and pushed to, this name
  std::filesystem::path auth_file;     ///< docker-format credentials for this job; empty: none
  std::filesystem::path digest_file;   ///< where the push writes the manifest digest
  /// The job's build options (validated): after the worker's own build_args.
  std::map<std::string, std::string> build_args;
  std::string target;
  std::map<std::string, std::string> image_labels;
  std::map<std::string, std::filesystem::path> secrets;  ///< id -> file
  std::map<std::string, std::string, std::less<>> env;  ///< HOME, TMPDIR, PATH for the tools
};

/// A build backend: the commands (argv only) that build, push and clean up.
/// The pipeline runs them with its own timeout, cancellation, logging and
/// redaction, so a backend only says what to run.
class Builder {
 public:
  virtual ~Builder() = default;
  virtual std::string_view name() const noexcept = 0;
  /// Succeeds when this backend can run on this host; else says why (its
  /// program missing: errc::tool_unavailable).
  virtual core::Result<void> available() const = 0;
  /// Commands run before the build, on the worker's network (outside the
  /// build's network box) with the job's credentials: they fetch the base
  /// images the Dockerfile names, so that a registry only the worker host
  /// reaches (its own loopback included) serves them. May be empty.
  virtual std::vector<ProcessSpec> pull_commands(const BuildContext& ctx) const = 0;
  virtual ProcessSpec build_command(const BuildContext& ctx) const = 0;
  virtual ProcessSpec push_command(const BuildContext& ctx) const = 0;
  /// The pushed manifest digest ("sha256:..."), from the push's digest file;
  /// errc::no_digest if it cannot be found.
  virtual core::Result<std::string> pushed_digest(const BuildContext& ctx) const = 0;
  /// The image store kept between jobs: its directory, its storage driver,
  /// and the argv that addresses it (`buildah --root ... --storage-driver
  /// ...`, a subcommand to follow).
  struct Store {
    std::filesystem::path dir;
    std::string driver;
    std::vector<std::string> argv;
  };
  virtual Store store() const = 0;
};

std::unique_ptr<Builder> make_buildah_builder(const BuildPipelineConfig& config);

/// Clone, build, push: the worker's JobRunner for jobs whose payload is a
/// BuildSpec (a job with another payload, or none, fails saying so).
/// Safe to run several jobs at once: each has its own directory (clone,
/// build context, credentials); they share the image store (cache_dir), whose
/// own locks (containers/storage) keep concurrent builds apart. A job leaves
/// no tag in the store: its image and layers stay, nameless, as cache.
///
/// How the BuildSpec's fields are read:
///  - repo_url: `owner/name` -> `<github_base_url>/owner/name.git`, or a full
///    URL (https; http/file only when allowed); never with credentials in it.
///  - branch: cloned shallow (--depth=1 --single-branch --no-tags).
///  - context_dir: relative to the repository root; empty means ".".
///  - dockerfile_path: relative to the repository root (not to the
///    context); empty means `<context_dir>/Dockerfile`.
///  - image_name: `name[:tag]`, pushed as `<registry>/<name>:<tag>` (tag
///    "latest" when absent).
///  - github_token: sent to git as `http.<origin>.extraHeader` through
///    GIT_CONFIG_* environment variables; may be empty for public repositories.
/// The result: image_url = `<registry>/<name>@sha256:...` (repository and
/// digest, no tag: tools refuse references with both), image_digest, logs
/// (bounded, redacted tail), error (redacted). Progress: the stages
/// "cloning", "building", "pushing" (stage::), each followed by its lines.
class BuildPipelineRunner final : public JobRunner {
 public:
  explicit BuildPipelineRunner(BuildPipelineConfig config);
  ~BuildPipelineRunner() override;
  BuildPipelineRunner(const BuildPipelineRunner&) = delete;
  BuildPipelineRunner& operator=(const BuildPipelineRunner&) = delete;

  core::JobResult run(const core::Job& job, const EmitFn& emit, std::stop_token stop) override;
  /// Removes the job's directory, on a thread of the runner's own: the
  /// result does not wait for it, nor does the slot. A job about to make its
  /// directory waits for the removals only while the file system holding
  /// work_root has less than cache_min_free_bytes free.
  void after_result(const core::Job& job) noexcept override;

  /// Succeeds when this runner can run jobs on this host as configured; else
  /// says why (no registry, buildah or git missing, no network box for the
  /// builds, work_root not writable, a password or secret file unreadable).
  /// For the worker service to call at startup and refuse to register; run()
  /// reports the same problems per job anyway.
  core::Result<void> check() const;

  /// Where images are kept between jobs, for the worker's start-up log
  /// ("overlay image cache in /var/lib/blacktree/cache/overlay").
  std::string storage() const;

  /// The image cache's figures so far (see BuildPipelineConfig::cache_max_bytes).
  struct CacheStats {
    std::uint64_t size_bytes = 0;      ///< as last measured, after the last job or prune
    std::uint64_t prunes = 0;          ///< times the cache was pruned to fit its budget
    std::uint64_t pruned_images = 0;   ///< images those prunes removed
  };
  CacheStats cache_stats() const;
  /// Waits until what follows the jobs that ended is done: their directories
  /// removed (see after_result), the cache measured, and pruned if that was
  /// due (for tests, and before the worker exits).
  void settle() const;

  const BuildPipelineConfig& config() const noexcept { return config_; }

 private:
  BuildPipelineConfig config_;
  std::unique_ptr<Builder> builder_;
  detail::CacheKeeper* cache() const;  // null when no budget is set
  mutable std::once_flag cache_once_;
  mutable std::unique_ptr<detail::CacheKeeper> cache_;
  std::unique_ptr<detail::DirRemover> remover_;
  std::mutex finished_mutex_;
  std::map<std::string, std::filesystem::path> finished_dirs_;  // job id -> its directory, until after_result
};

}  // namespace blacktree::worker
