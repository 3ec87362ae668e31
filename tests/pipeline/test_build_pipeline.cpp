// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// BuildPipelineRunner end to end, with real components and no mocks:
//  - git: `git http-backend` behind tests/pipeline/git_http_server.py, which
//    refuses every request without the job's token in a Basic auth header;
//  - registry: the Debian `docker-registry` (distribution 2.x) with htpasswd
//    auth, plain http on 127.0.0.1 (hence registry_tls_verify = false);
//  - builder: real buildah (vfs storage, chroot isolation: no daemon, no OCI
//    runtime needed);
//  - skopeo to inspect what was pushed.
// Each test case starts its own servers on free ports and stops them.
//
// The sample images need no internet: they are `FROM scratch`, COPY the
// static busybox binary (Debian's busybox-static, /bin/busybox) from the
// repository into the image and install its applets with a RUN step, so that
// later RUN steps have a shell.

#include <blacktree/worker/build_pipeline.hpp>
#include <blacktree/worker/metered_runner.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "pipeline_support.hpp"
#include "../../src/worker/dir_remover.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <ifaddrs.h>
#include <pwd.h>
#include <net/if.h>

namespace bw = blacktree::worker;
namespace core = blacktree::core;
using namespace blacktree::test;
using namespace std::chrono_literals;

namespace {

// What the worker service does with a job: runs it, hands the result on, then
// lets the runner remove what the job left (after_result); returns once that
// is done, so a test sees what stays.
core::JobResult run_job(bw::BuildPipelineRunner& runner, const core::Job& job, const bw::EmitFn& emit,
                        std::stop_token stop) {
  auto result = runner.run(job, emit, std::move(stop));
  runner.after_result(job);
  runner.settle();
  return result;
}

std::string random_hex(std::size_t n) {
  std::mt19937_64 gen(std::random_device{}());
  std::string out(n, '0');
  for (auto& c : out) c = "0123456789abcdef"[gen() % 16];
  return out;
}

const fs::path busybox = "/bin/busybox";

std::string sample_dockerfile(std::string_view extra = "") {
  return std::string("FROM scratch\n"
                     "COPY busybox /bin/busybox\n"
                     "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n") +
         std::string(extra);
}

// A job whose build the tests edit field by field; the runner gets it as a
// core::Job with the build as its (immutable) payload.
struct TestJob {
  std::string id;
  std::chrono::milliseconds timeout{0};
  bw::BuildSpec build;
  operator core::Job() const {  // NOLINT(google-explicit-constructor): a TestJob goes where a core::Job does
    core::Job job;
    job.id = id;
    job.timeout = timeout;
    job.payload = core::Payload(build);
    return job;
  }
};

// Every server a pipeline job needs, in one temporary directory.
struct PipelineEnv {
  TempDir tmp;
  std::string token = "ghs_" + random_hex(36);
  GitServer git{tmp / "git", token};
  Registry registry{tmp / "registry", "pusher", "pw-" + random_hex(24)};
  fs::path work_root = tmp / "jobs";

  PipelineEnv() { write_file(tmp / "registry-password", registry.password() + "\n"); }
  ~PipelineEnv() { unmount_below(tmp.path()); }
  PipelineEnv(const PipelineEnv&) = delete;
  PipelineEnv& operator=(const PipelineEnv&) = delete;

  bw::BuildPipelineConfig config() const {
    bw::BuildPipelineConfig c;
    c.work_root = work_root;
    c.cache_dir = tmp / "cache";
    c.github_base_url = git.base_url();
    c.allow_http_repos = true;
    c.registry = registry.host() + "/team";
    c.registry_tls_verify = false;
    c.credentials.kind = bw::RegistryCredentials::Kind::static_password;
    c.credentials.username = registry.user();
    c.credentials.password_file = tmp / "registry-password";
    c.default_timeout = 240s;
    c.kill_grace = 2s;
    return c;
  }

  TestJob job(std::string id, std::string repo = "acme/app") const {
    TestJob j;
    j.id = std::move(id);
    j.build.repo_url = std::move(repo);
    j.build.branch = "main";
    j.build.dockerfile_path = "app/Dockerfile";
    j.build.context_dir = "app";
    j.build.image_name = "app:v1";
    j.build.github_token = core::Secret(token);
    return j;
  }

  void create_sample_repo(const std::string& name = "acme/app", std::string_view extra_dockerfile = "",
                          const std::string& hello = "hello from the repository\n") {
    git.create_repo(name,
                    {{"README.md", "a sample\n"},
                     {"app/Dockerfile", sample_dockerfile(extra_dockerfile)},
                     {"app/hello.txt", hello}},
                    "main", {}, {{"app/busybox", busybox}});
  }

  bool work_root_empty() const {
    std::error_code ec;
    return !fs::exists(work_root) || fs::is_empty(work_root, ec);
  }

  /// Builds the sample image (busybox, its applets installed) and pushes it
  /// to the test registry as team/base:1, with an image store of its own so
  /// that no runner of the test has its layers yet; returns its reference.
  std::string push_base_image() {
    create_sample_repo("acme/base");
    auto cfg = config();
    cfg.cache_dir = tmp / "cache-base-image";
    auto base_job = job("base", "acme/base");
    base_job.build.image_name = "base:1";
    bw::BuildPipelineRunner runner(cfg);
    const auto result = runner.run(base_job, {}, {});
    runner.after_result(base_job);
    runner.settle();
    if (!result.success) throw std::runtime_error("the base image failed to build: " + result.error);
    return registry.host() + "/team/base:1";
  }
};

// Progress events as the service would receive them.
struct Events {
  std::mutex m;
  std::vector<std::pair<std::string, std::string>> list;
  bw::EmitFn fn() {
    return [this](std::string_view stage, std::string_view line) {
      std::lock_guard lock(m);
      list.emplace_back(std::string(stage), std::string(line));
    };
  }
  std::string all_lines() {
    std::lock_guard lock(m);
    std::string out;
    for (auto& [p, l] : list) out += l + "\n";
    return out;
  }
  std::vector<std::string> stage_changes() {
    std::lock_guard lock(m);
    std::vector<std::string> out;
    for (auto& [p, l] : list) {
      if (l.empty()) out.push_back(p);
    }
    return out;
  }
};

// Scans /proc/*/cmdline while a job runs: what ran, whether any argv held a
// secret, and (optionally) calls `on_process` for each new process.
class ProcWatcher {
 public:
  explicit ProcWatcher(std::vector<std::string> secrets,
                       std::function<void(pid_t, const std::string&)> on_process = {})
      : secrets_(std::move(secrets)), on_process_(std::move(on_process)), thread_([this] { loop(); }) {}
  ~ProcWatcher() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool secret_seen() const { return secret_seen_; }
  std::string offender() {
    std::lock_guard lock(m_);
    return offender_;
  }
  std::vector<std::string> cmdlines() {
    std::lock_guard lock(m_);
    return {cmdlines_.begin(), cmdlines_.end()};
  }
  std::vector<pid_t> pids_matching(std::string_view needle) {
    std::lock_guard lock(m_);
    std::vector<pid_t> out;
    for (auto& [pid, cmd] : seen_) {
      if (cmd.find(needle) != std::string::npos) out.push_back(pid);
    }
    return out;
  }

 private:
  void loop() {
    const pid_t self = ::getpid();
    while (!stop_) {
      std::error_code ec;
      for (const auto& entry : fs::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name[0] < '0' || name[0] > '9') continue;
        const pid_t pid = std::stoi(name);
        if (pid == self || foreign_.count(pid) != 0) continue;
        std::string raw = read_file(entry.path() / "cmdline");
        if (raw.empty()) continue;
        for (const auto& s : secrets_) {
          if (raw.find(s) != std::string::npos) {
            secret_seen_ = true;
            std::lock_guard lock(m_);
            offender_ = raw;
          }
        }
        // Beyond the secret check (any process at all), only this test's own
        // processes count: ctest runs other tests, with jobs of their own,
        // at the same time.
        {
          std::lock_guard lock(m_);
          if (seen_.count(pid) != 0) continue;
        }
        if (!descends_from(pid, self)) {
          foreign_.insert(pid);
          continue;
        }
        for (auto& c : raw) {
          if (c == '\0') c = ' ';
        }
        std::lock_guard lock(m_);
        auto [it, inserted] = seen_.emplace(pid, raw);
        if (inserted) {
          cmdlines_.insert(raw);
          if (on_process_) on_process_(pid, raw);
        }
      }
      std::this_thread::sleep_for(5ms);  // a sampling interval, not a wait for a condition
    }
  }

  static bool descends_from(pid_t pid, pid_t ancestor) {
    for (int depth = 0; depth < 32 && pid > 1; ++depth) {
      const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
      const auto close = stat.rfind(')');
      if (close == std::string::npos || close + 4 >= stat.size()) return false;
      pid = static_cast<pid_t>(std::strtol(stat.c_str() + close + 4, nullptr, 10));
      if (pid == ancestor) return true;
    }
    return false;
  }

  std::vector<std::string> secrets_;
  std::function<void(pid_t, const std::string&)> on_process_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> secret_seen_{false};
  std::mutex m_;
  std::map<pid_t, std::string> seen_;
  std::set<pid_t> foreign_;  // not ours (the watcher thread alone uses it)
  std::set<std::string> cmdlines_;
  std::string offender_;
  std::thread thread_;
};

std::string fmt_events(const std::vector<std::string>& events) {
  std::string out;
  for (const auto& e : events) out += e + "\n";
  return out;
}

// What the base images' pulls printed: the building stage's lines before the
// build's first step. buildah pull ("missing" policy) prints only the
// image's id when the store holds it, else "Trying to pull", a line per blob
// it copies, then the id.
std::vector<std::string> base_pull_lines(Events& events) {
  std::lock_guard lock(events.m);
  std::vector<std::string> lines;
  for (const auto& [stage, line] : events.list) {
    if (stage != bw::stage::building || line.empty()) continue;
    if (line.rfind("STEP ", 0) == 0) break;
    lines.push_back(line);
  }
  return lines;
}

// The layer blobs a pull copied into the store: "Copying blob sha256:..."
// without "skipped: already exists" (a blob the store holds).
std::size_t blobs_copied(const std::vector<std::string>& pull_lines) {
  return static_cast<std::size_t>(std::count_if(pull_lines.begin(), pull_lines.end(), [](const std::string& line) {
    return line.rfind("Copying blob ", 0) == 0 && line.find("already exists") == std::string::npos;
  }));
}

// Every file of every layer of `ref`, extracted under `out`; also returns the
// raw (uncompressed) text of the config and manifest.
std::string extract_image(const Registry& registry, const std::string& ref, const fs::path& out) {
  const fs::path blobs = out / "blobs";
  registry.copy_to_dir(ref, blobs);
  std::string metadata;
  int n = 0;
  for (const auto& entry : fs::directory_iterator(blobs)) {
    const fs::path layer_dir = out / ("layer-" + std::to_string(n++));
    fs::create_directories(layer_dir);
    try {
      run_ok({"tar", "-xf", entry.path().string(), "-C", layer_dir.string()});
    } catch (const std::exception&) {
      metadata += read_file(entry.path());  // not a tarball: manifest, config, version
    }
  }
  return metadata;
}

bool tree_contains(const fs::path& root, const std::vector<std::string>& needles) {
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file() || entry.is_symlink()) continue;
    const std::string content = read_file(entry.path());
    for (const auto& n : needles) {
      if (content.find(n) != std::string::npos) return true;
    }
  }
  return false;
}

std::optional<fs::path> find_in_layers(const fs::path& root, const std::string& rel) {
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.path().filename().string().rfind("layer-", 0) != 0) continue;
    if (fs::exists(entry.path() / rel)) return entry.path() / rel;
  }
  return std::nullopt;
}

std::vector<std::string> secret_forms(const std::string& secret) {
  return {secret, bw::base64_encode(secret), bw::base64_encode("x-access-token:" + secret)};
}

// The image store a runner's jobs share, addressed as the runner addresses
// it (its storage() reads "<driver> image cache in <dir>").
struct ImageStore {
  explicit ImageStore(const bw::BuildPipelineRunner& runner) {
    const std::string line = runner.storage();
    driver = line.substr(0, line.find(' '));
    dir = line.substr(line.rfind(' ') + 1);
  }
  /// `buildah --root ... <args>`: its output.
  std::string buildah(std::initializer_list<std::string> args) const {
    std::vector<std::string> argv{"buildah", "--root", (dir / "storage").string(), "--runroot", (dir / "run").string(),
                                  "--storage-driver", driver};
    argv.insert(argv.end(), args);
    return run_ok(argv);
  }
  /// The store's images (buildah images --all --json).
  nlohmann::json images() const { return nlohmann::json::parse(buildah({"images", "--all", "--json", "--no-trunc"})); }
  /// Every layer the store holds, each once (containers/storage's own record).
  nlohmann::json layers() const {
    return nlohmann::json::parse(read_file(dir / "storage" / (driver + "-layers") / "layers.json"));
  }

  std::string driver;
  fs::path dir;
};

}  // namespace

TEST_CASE("a repository is cloned with the token then built with RUN and COPY from a sub-directory and pushed",
          "[pipeline]") {
  PipelineEnv env;
  env.create_sample_repo("acme/app",
                         "RUN mkdir -p /srv && echo built-by-run > /srv/run.txt && env > /srv/build-env.txt\n"
                         "COPY hello.txt /srv/hello.txt\n");
  auto cfg = env.config();
  cfg.keep_job_dir = true;  // to inspect the clone's .git/config afterwards
  cfg.log_tail_bytes = 512;  // the status keeps a bounded tail
  // Wrappers record the exact argv of every git and buildah call (the
  // /proc watcher below samples, and may miss a short-lived process).
  const fs::path argv_log = env.tmp / "argv.log";
  for (const auto& [name, real] : {std::pair{"git", "git"}, std::pair{"buildah", "buildah"}}) {
    write_file(env.tmp / "bin" / name,
               std::string("#!/bin/sh\nprintf '%s\\n' \"") + name + " $*\" >> '" + argv_log.string() +
                   "'\nPATH=/usr/local/bin:/usr/bin:/bin exec " + real + " \"$@\"\n",
               fs::perms::owner_all);
  }
  cfg.git_program = (env.tmp / "bin" / "git").string();
  cfg.buildah_program = (env.tmp / "bin" / "buildah").string();
  bw::BuildPipelineRunner runner(cfg);
  REQUIRE(runner.check());
  Events events;
  ProcWatcher watcher(secret_forms(env.token));
  const auto result = run_job(runner, env.job("job-ok"), events.fn(), {});
  watcher.stop();
  INFO(result.error << "\n" << result.logs);
  REQUIRE(result.success);
  CHECK(result.error.empty());
  CHECK(result.job_id == "job-ok");

  // The reported digest is the registry's.
  const std::string ref = env.registry.host() + "/team/app:v1";
  CHECK(result.image_url == env.registry.host() + "/team/app@" + result.image_digest);
  CHECK_THAT(result.image_digest, Catch::StartsWith("sha256:"));
  CHECK_THAT(env.registry.inspect(ref), Catch::Contains("\"Digest\": \"" + result.image_digest + "\""));

  // The image holds what the Dockerfile put there.
  TempDir image;
  const std::string metadata = extract_image(env.registry, result.image_url, image.path());
  const auto run_txt = find_in_layers(image.path(), "srv/run.txt");
  const auto hello_txt = find_in_layers(image.path(), "srv/hello.txt");
  REQUIRE(run_txt);
  REQUIRE(hello_txt);
  CHECK(read_file(*run_txt) == "built-by-run\n");
  CHECK(read_file(*hello_txt) == "hello from the repository\n");
  CHECK(find_in_layers(image.path(), "bin/busybox"));

  // The token is nowhere: image layers, config, history, logs, events,
  // status, any process's argv during the job, the clone's config, a URL.
  for (const auto& form : secret_forms(env.token)) {
    CHECK_FALSE(tree_contains(image.path(), {form}));
    CHECK(metadata.find(form) == std::string::npos);
    CHECK(result.logs.find(form) == std::string::npos);
    CHECK(events.all_lines().find(form) == std::string::npos);
    CHECK(result.image_url.find(form) == std::string::npos);
    CHECK(read_file(env.git.requests_log()).find(form) == std::string::npos);
  }
  INFO("argv holding a secret: " << watcher.offender());
  CHECK_FALSE(watcher.secret_seen());
  // ... and the watcher did see the job's tools run.
  const auto cmds = watcher.cmdlines();
  CHECK(std::any_of(cmds.begin(), cmds.end(), [](auto& c) { return c.find(" bud ") != std::string::npos; }));
  const std::string argvs = read_file(argv_log);
  INFO(argvs);
  CHECK_THAT(argvs, Catch::Contains("git clone") && Catch::Contains(" bud ") && Catch::Contains(" push "));
  for (const auto& form : secret_forms(env.token)) CHECK(argvs.find(form) == std::string::npos);
  CHECK_THAT(read_file(env.git.requests_log()), Catch::Contains("authorised=True"));

  std::vector<fs::path> job_dirs(fs::directory_iterator(env.work_root), fs::directory_iterator{});
  REQUIRE(job_dirs.size() == 1);
  const std::string git_config = read_file(job_dirs[0] / "src" / ".git" / "config");
  CHECK_THAT(git_config, Catch::Contains("[remote \"origin\"]"));
  for (const auto& form : secret_forms(env.token)) CHECK(git_config.find(form) == std::string::npos);
  CHECK_THAT(git_config, !Catch::Contains("extraHeader") && !Catch::Contains("Authorization"));

  // Phases in order, each line streamed as it came.
  const auto stages = events.stage_changes();
  CHECK(stages == std::vector<std::string>{"cloning", "building", "pushing"});
  CHECK_THAT(events.all_lines(), Catch::Contains("STEP 5/5: COPY hello.txt /srv/hello.txt"));
  CHECK_THAT(result.logs, Catch::Contains("pushed " + result.image_url));
  CHECK_THAT(result.logs, Catch::StartsWith("[... "));
  CHECK(result.logs.size() < 512 + 40);
  CHECK_THAT(events.all_lines(), Catch::Contains("Cloning into"));  // events have it all
}

TEST_CASE("a job's result is out before its directory is removed, and the directory goes right after",
          "[pipeline]") {
  PipelineEnv env;
  env.create_sample_repo();
  bw::BuildPipelineRunner runner(env.config());
  const core::Job job = env.job("dir-after-result");
  const auto result = runner.run(job, {}, {});
  INFO(result.error);
  REQUIRE(result.success);
  // The result is in hand and the job's clone is still there: its removal
  // did not stand between the push and the result.
  const std::vector<fs::path> dirs(fs::directory_iterator(env.work_root), fs::directory_iterator{});
  REQUIRE(dirs.size() == 1);
  CHECK(fs::exists(dirs[0] / "src" / ".git"));
  runner.after_result(job);
  runner.settle();
  CHECK(env.work_root_empty());
}

TEST_CASE("a job about to start waits for pending removals while the disk is short", "[pipeline]") {
  TempDir tmp;
  const fs::path big = tmp / "job-big";
  for (int d = 0; d < 50; ++d) {
    fs::create_directories(big / std::to_string(d));
    for (int f = 0; f < 100; ++f) std::ofstream(big / std::to_string(d) / std::to_string(f)) << "x";
  }
  bw::detail::DirRemover remover({});
  remover.remove(big);
  // No floor can be met: waits until the queue is empty, so 5,000 files are gone.
  remover.wait_for_space(tmp.path(), std::numeric_limits<std::uint64_t>::max());
  CHECK_FALSE(fs::exists(big));
}

TEST_CASE("after a job nothing of it is left but cache: no job directory, credentials, tag or container", "[pipeline]") {
  PipelineEnv env;
  env.create_sample_repo();
  bw::BuildPipelineRunner runner(env.config());
  ProcWatcher watcher({});
  const auto ok = run_job(runner, env.job("clean-ok"), {}, {});
  auto failing = env.job("clean-fail");
  failing.build.dockerfile_path = "app/Missing.Dockerfile";
  const auto failed = run_job(runner, failing, {}, {});
  watcher.stop();
  INFO(ok.error);
  CHECK(ok.success);
  CHECK_FALSE(failed.success);
  CHECK(env.work_root_empty());
  // Every buildah call used the worker's own image store, never the host's.
  for (const auto& cmd : watcher.cmdlines()) {
    if (cmd.rfind("buildah ", 0) == 0) CHECK_THAT(cmd, Catch::Contains("--root " + (env.tmp / "cache").string()));
  }
  // The store keeps the layers as cache, but no job's name and no build container.
  const ImageStore store(runner);
  CHECK(store.dir == env.tmp / "cache" / store.driver);
  const std::string names = store.buildah({"images", "--all", "--format", "{{.Name}}"});
  CHECK_THAT(names, !Catch::Contains("team/app") && Catch::Contains("<none>"));
  CHECK(store.buildah({"containers", "--quiet"}).empty());
}

namespace {

// Whether this host mounts an overlay file system in `dir`, as the image
// store's overlay driver must (root only: a rootless worker's overlay goes
// through a user namespace or fuse-overlayfs).
bool overlay_mounts_in(const fs::path& dir) {
  for (const char* sub : {"lower", "upper", "work", "merged"}) fs::create_directories(dir / sub);
  const std::string options = "lowerdir=" + (dir / "lower").string() + ",upperdir=" + (dir / "upper").string() +
                              ",workdir=" + (dir / "work").string();
  if (::mount("overlay", (dir / "merged").c_str(), "overlay", 0, options.c_str()) != 0) return false;
  ::umount2((dir / "merged").c_str(), MNT_DETACH);
  return true;
}

}  // namespace

TEST_CASE("storage driver auto: the runner says which driver it chose, overlay where this host mounts one, else vfs, "
          "and its jobs use it",
          "[pipeline][cache]") {
  PipelineEnv env;
  env.create_sample_repo();
  auto cfg = env.config();
  REQUIRE(cfg.buildah_storage_driver == "auto");  // the default

  SECTION("the driver this host allows") {
    std::string expected;
    if (::geteuid() == 0) {
      expected = overlay_mounts_in(env.tmp / "overlay-probe") ? "overlay" : "vfs";
    } else {
      WARN("not root: cannot tell on our own whether overlay works for a rootless store; either driver is accepted");
    }
    bw::BuildPipelineRunner runner(cfg);
    const ImageStore store(runner);
    CHECK_THAT(runner.storage(), Catch::StartsWith(store.driver + " image cache in "));
    CHECK((store.driver == "overlay" || store.driver == "vfs"));
    if (!expected.empty()) CHECK(store.driver == expected);
    CHECK(store.dir == cfg.cache_dir / store.driver);
    const auto r = run_job(runner, env.job("auto"), {}, {});
    INFO(r.error << "\n" << r.logs);
    REQUIRE(r.success);
    CHECK_FALSE(store.layers().empty());  // the job's layers went into that store
  }

  SECTION("a host where overlay does not work gets vfs") {
    // buildah as it behaves where the kernel refuses overlay.
    write_file(env.tmp / "bin" / "buildah",
               "#!/bin/sh\n"
               "case \" $* \" in *' --storage-driver overlay '*)\n"
               "  echo 'Error: kernel does not support overlay fs: overlay: the backing ext4 fs does not support "
               "overlay' >&2; exit 125;;\n"
               "esac\n"
               "PATH=/usr/local/bin:/usr/bin:/bin exec buildah \"$@\"\n",
               fs::perms::owner_all);
    cfg.buildah_program = (env.tmp / "bin" / "buildah").string();
    bw::BuildPipelineRunner runner(cfg);
    CHECK_THAT(runner.storage(), Catch::Equals("vfs image cache in " + (cfg.cache_dir / "vfs").string()));
    const auto r = run_job(runner, env.job("fallback"), {}, {});
    INFO(r.error << "\n" << r.logs);
    REQUIRE(r.success);
    CHECK_FALSE(ImageStore(runner).layers().empty());
  }

  SECTION("a driver set by name is used as set") {
    cfg.buildah_storage_driver = "vfs";
    CHECK_THAT(bw::BuildPipelineRunner(cfg).storage(), Catch::StartsWith("vfs image cache in "));
  }
}

TEST_CASE("a base image from a registry on the worker's own loopback is pulled, with the job's credentials, "
          "under the private build network",
          "[pipeline][cache][security]") {
  PipelineEnv env;
  env.create_sample_repo();  // busybox, pushed as team/base:1 below
  auto base_job = env.job("base");
  base_job.build.image_name = "base:1";
  bw::BuildPipelineRunner runner(env.config());
  const auto base = run_job(runner, base_job, {}, {});
  INFO(base.error << "\n" << base.logs);
  REQUIRE(base.success);
  // The registry listens on 127.0.0.1 and wants a password: out of the box's
  // reach, so the pull happens before the build, on the worker's network.
  env.git.create_repo("acme/on-base", {{"Dockerfile", "FROM " + env.registry.host() +
                                                          "/team/base:1\nRUN echo on-base > /on-base.txt\n"}});
  auto job = env.job("on-base", "acme/on-base");
  job.build.dockerfile_path = "Dockerfile";
  job.build.context_dir = ".";
  job.build.image_name = "on-base:1";
  // A fresh store, so the base is not there from the first job.
  auto cfg = env.config();
  cfg.cache_dir = env.tmp / "cache-fresh";
  bw::BuildPipelineRunner fresh(cfg);
  const auto r = run_job(fresh, job, {}, {});
  INFO(r.error << "\n" << r.logs);
  REQUIRE(r.success);
  TempDir image;
  extract_image(env.registry, r.image_url, image.path());
  CHECK(find_in_layers(image.path(), "on-base.txt"));
  CHECK(find_in_layers(image.path(), "bin/busybox"));  // from the base
}

namespace {

// Holds each party at a named point until every party reached it: two jobs'
// builds, held by their progress callbacks, are then running at once.
class Rendezvous {
 public:
  explicit Rendezvous(int parties) : parties_(parties) {}
  /// False when the others did not arrive within `limit`.
  bool arrive_and_wait(const std::string& point, std::chrono::seconds limit) {
    std::unique_lock lock(m_);
    ++arrived_[point];
    changed_.notify_all();
    return changed_.wait_for(lock, limit, [&] { return arrived_[point] >= parties_; });
  }

 private:
  const int parties_;
  std::mutex m_;
  std::condition_variable changed_;
  std::map<std::string, int> arrived_;
};

// A shell command whose output fills every pipe between a RUN step and the
// worker (2 MB in lines of 99 dots): the step cannot go on while the worker
// does not read. Nothing the test needs follows it in the same step: the end
// of such a step's output was seen lost once in some 40 runs (buildah 1.28,
// chroot isolation; the worker reads its pipe to the end).
const std::string fill_the_pipe = "yes " + std::string(99, '.') + " | head -n 20000";

// A job's progress lines without the dots of fill_the_pipe, for a message.
std::string without_fill(Events& events) {
  std::lock_guard lock(events.m);
  std::string out;
  for (const auto& [stage, line] : events.list) {
    if (line.empty() || line.find_first_not_of('.') != std::string::npos) out += line + "\n";
  }
  return out;
}

}  // namespace

TEST_CASE("two jobs at once with their own tokens on the same base: isolated, and one copy of the base in the store",
          "[pipeline][cache][security]") {
  PipelineEnv env;
  const std::string base_ref = env.push_base_image();
  const std::string names[2] = {"one", "two"};
  const auto job_dir_glob = [&](int i) { return (env.work_root / ("job-shared-" + names[i] + "-*")).string(); };
  // Whether job i's credentials file is on this host now.
  const auto auth_file_exists = [&](int i) {
    for (const auto& dir : fs::directory_iterator(env.work_root)) {
      const bool of_job = dir.path().filename().string().rfind("job-shared-" + names[i] + "-", 0) == 0;
      if (of_job && fs::exists(dir.path() / "docker" / "config.json")) return true;
    }
    return false;
  };

  // Job two's repository is on a second git server with a token of its own.
  // Each build holds at "ready-<name>" until both builds are there (each job's
  // directory and credentials exist from then on); its next step looks for
  // the other job's directory and credentials file and holds at
  // "probed-<name>" (the other job has not ended while it looked).
  const std::string tokens[2] = {env.token, "ghs_" + random_hex(36)};
  GitServer second(env.tmp / "git-2", tokens[1]);
  for (int i = 0; i < 2; ++i) {
    const std::string& n = names[i];
    const std::string other_dir = job_dir_glob(1 - i);
    const std::string probe = "RUN echo ready-" + n + " && " + fill_the_pipe + "\n" +
                              "RUN if ls -d " + other_dir + " >/dev/null 2>&1; then echo OTHER-DIR-SEEN; else echo "
                              "OTHER-DIR-HIDDEN; fi && if cat " + other_dir + "/docker/config.json; then echo "
                              "OTHER-AUTH-READ; else echo OTHER-AUTH-UNREADABLE; fi && echo probed-" + n + "\n";
    (i == 0 ? env.git : second)
        .create_repo("acme/" + n, {{"Dockerfile", "FROM " + base_ref + "\nCOPY " + n + ".txt /" + n + ".txt\n" +
                                                      probe + "RUN ls -a / > /seen-by-" + n + ".txt\nCOPY . /ctx/\n"},
                                   {n + ".txt", "I am " + n + "\n"}});
  }
  auto cfg = env.config();
  cfg.cache_dir = env.tmp / "cache-shared";  // empty: both jobs pull the base at once
  cfg.token_hosts = {"127.0.0.1:" + std::to_string(second.port())};
  bw::BuildPipelineRunner runner(cfg);
  Rendezvous rendezvous(2);
  std::atomic<bool> overlapped[2] = {false, false};
  std::atomic<bool> other_auth_existed[2] = {false, false};
  Events events[2];
  core::JobResult results[2];
  {
    std::jthread threads[2];
    for (int i = 0; i < 2; ++i) {
      threads[i] = std::jthread([&, i] {
        const std::string& n = names[i];
        auto job = env.job("shared-" + n, i == 0 ? "acme/one" : second.base_url() + "/acme/two.git");
        job.build.github_token = core::Secret(tokens[i]);
        job.build.dockerfile_path = "Dockerfile";
        job.build.context_dir = ".";
        job.build.image_name = "shared/" + n + ":1";
        const auto record = events[i].fn();
        const auto hold = [&, i, record](std::string_view stage, std::string_view line) {
          record(stage, line);
          if (line == "ready-" + n) overlapped[i] = rendezvous.arrive_and_wait("ready", 120s);
          if (line == "probed-" + n) {
            other_auth_existed[i] = auth_file_exists(1 - i);
            overlapped[i] = rendezvous.arrive_and_wait("probed", 120s) && overlapped[i];
          }
        };
        results[i] = run_job(runner, job, hold, {});
      });
    }
  }
  for (int i = 0; i < 2; ++i) {
    const std::string& mine = names[i];
    const std::string& other = names[1 - i];
    INFO(mine << ": " << results[i].error << "\n" << without_fill(events[i]));
    REQUIRE(results[i].success);
    // Both builds were held at once, twice: they ran side by side.
    CHECK(overlapped[i]);
    // The other job's directory and credentials existed, and the RUN step
    // could see neither.
    CHECK(other_auth_existed[i]);
    const auto lines = [&] {
      std::lock_guard lock(events[i].m);
      std::set<std::string> all;
      for (const auto& [stage, line] : events[i].list) all.insert(line);
      return all;
    }();
    CHECK(lines.count("OTHER-DIR-HIDDEN") == 1);
    CHECK(lines.count("OTHER-AUTH-UNREADABLE") == 1);
    CHECK(lines.count("OTHER-DIR-SEEN") == 0);
    CHECK(lines.count("OTHER-AUTH-READ") == 0);
    TempDir image;
    extract_image(env.registry, results[i].image_url, image.path());
    CHECK(find_in_layers(image.path(), mine + ".txt"));
    CHECK(find_in_layers(image.path(), "bin/busybox"));  // the base
    CHECK_FALSE(find_in_layers(image.path(), other + ".txt"));
    const auto seen = find_in_layers(image.path(), "seen-by-" + mine + ".txt");
    REQUIRE(seen);
    CHECK(read_file(*seen).find(other) == std::string::npos);
    for (const auto& token : tokens) {
      CHECK_FALSE(tree_contains(image.path(), secret_forms(token)));
      CHECK(results[i].logs.find(token) == std::string::npos);
    }
  }
  // The store holds the base once: one image by that name, and each of its
  // layers (by content) once.
  const ImageStore store(runner);
  std::size_t base_images = 0;
  for (const auto& image : store.images()) {
    for (const auto& name : image.value("names", nlohmann::json::array())) base_images += name == base_ref ? 1 : 0;
  }
  CHECK(base_images == 1);
  const auto base = nlohmann::json::parse(store.buildah({"inspect", "--type", "image", base_ref}));
  const auto diff_ids = base.at("OCIv1").at("rootfs").at("diff_ids");
  REQUIRE(diff_ids.size() == 2);  // busybox, then its applets
  const auto layers = store.layers();
  for (const auto& diff_id : diff_ids) {
    CAPTURE(diff_id);
    CHECK(std::count_if(layers.begin(), layers.end(),
                        [&](const nlohmann::json& layer) { return layer.value("diff-digest", "") == diff_id; }) == 1);
  }
  CHECK(env.work_root_empty());
}

TEST_CASE("a fresh worker takes build steps from the fleet's layer cache in the registry", "[pipeline][cache]") {
  PipelineEnv env;
  env.create_sample_repo("acme/app", "RUN echo \"ran-$((6*7))\" > /ran.txt && echo \"ran-$((6*7))\"\n");
  auto cfg = env.config();
  // The cache registry listens on this host's loopback, which a boxed build
  // cannot reach; a fleet's would be a registry the boxes reach.
  cfg.build_network = bw::BuildNetwork::host;
  cfg.layer_cache_repo = env.registry.host() + "/team/layer-cache";
  cfg.cache_dir = env.tmp / "cache-worker-1";
  const auto first = bw::BuildPipelineRunner(cfg).run(env.job("worker-1"), {}, {});
  INFO(first.error << "\n" << first.logs);
  REQUIRE(first.success);
  CHECK_THAT(first.logs, Catch::Contains("\nran-42\n"));
  // Another worker, its own cache empty: the steps come from the registry.
  cfg.cache_dir = env.tmp / "cache-worker-2";
  auto job = env.job("worker-2");
  job.build.image_name = "app:v2";
  const auto second = bw::BuildPipelineRunner(cfg).run(job, {}, {});
  INFO(second.error << "\n" << second.logs);
  REQUIRE(second.success);
  CHECK_THAT(second.logs, !Catch::Contains("\nran-42\n"));
  CHECK(second.image_digest == first.image_digest);  // the very same layers and config
}

TEST_CASE("base images from another registry with its own pull credentials, and through a mirror",
          "[pipeline][cache][security]") {
  PipelineEnv env;
  // Registry B holds the base and wants a password of its own.
  Registry other(env.tmp / "registry-b", "puller", "pw-b-" + random_hex(24));
  write_file(env.tmp / "registry-b-password", other.password() + "\n");
  const bw::RegistryCredentials other_creds{bw::RegistryCredentials::Kind::static_password, other.user(),
                                            env.tmp / "registry-b-password", {}};
  env.create_sample_repo();
  auto to_other = env.config();
  to_other.registry = other.host() + "/team";
  to_other.credentials = other_creds;
  auto base_job = env.job("base");
  base_job.build.image_name = "base:1";
  const auto base = bw::BuildPipelineRunner(to_other).run(base_job, {}, {});
  INFO(base.error << "\n" << base.logs);
  REQUIRE(base.success);

  const auto job_from = [&](const std::string& id, const std::string& from) {
    env.git.create_repo("acme/" + id, {{"Dockerfile", "FROM " + from + "\nRUN echo " + id + " > /" + id + ".txt\n"}});
    auto job = env.job(id, "acme/" + id);
    job.build.dockerfile_path = "Dockerfile";
    job.build.context_dir = ".";
    job.build.image_name = id + ":1";
    return job;
  };
  // Without B's credentials the pull is refused, and the error says whose.
  auto cfg = env.config();
  cfg.cache_dir = env.tmp / "cache-without";
  const auto refused = bw::BuildPipelineRunner(cfg).run(job_from("without", other.host() + "/team/base:1"), {}, {});
  CHECK_FALSE(refused.success);
  CHECK_THAT(refused.error, Catch::StartsWith("the registry of base image " + other.host() + "/team/base:1 refused"));
  CHECK_THAT(refused.error, !Catch::Contains(other.password()));

  // With them (pull_credentials), the same job builds.
  cfg.cache_dir = env.tmp / "cache-with";
  cfg.pull_credentials = {{other.host(), other_creds}};
  REQUIRE(bw::BuildPipelineRunner(cfg).check());
  const auto pulled = bw::BuildPipelineRunner(cfg).run(job_from("with", other.host() + "/team/base:1"), {}, {});
  INFO(pulled.error << "\n" << pulled.logs);
  CHECK(pulled.success);

  // An upstream nobody can reach, mirrored by B: the base comes from the mirror.
  cfg.cache_dir = env.tmp / "cache-mirror";
  cfg.registry_mirrors = {{"upstream.invalid", other.host()}};
  const auto mirrored = bw::BuildPipelineRunner(cfg).run(job_from("mirrored", "upstream.invalid/team/base:1"), {}, {});
  INFO(mirrored.error << "\n" << mirrored.logs);
  REQUIRE(mirrored.success);
  TempDir image;
  extract_image(env.registry, mirrored.image_url, image.path());
  CHECK(find_in_layers(image.path(), "mirrored.txt"));
  CHECK(find_in_layers(image.path(), "bin/busybox"));  // from the base, by way of the mirror
  CHECK(env.work_root_empty());
}

TEST_CASE("a job's build options reach the image, and its build secret stays out of the image and the logs",
          "[pipeline][options]") {
  PipelineEnv env;
  const std::string secret = "s3cr3t-" + random_hex(16);
  env.git.create_repo("acme/options",
                      {{"Dockerfile",
                        "FROM scratch AS base\n"
                        "COPY busybox /bin/busybox\n"
                        "RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
                        "ARG GREETING=default\n"
                        "RUN echo \"$GREETING\" > /greeting.txt\n"
                        "RUN --mount=type=secret,id=deploy_key wc -c < /run/secrets/deploy_key > /secret-length.txt && "
                        "cat /run/secrets/deploy_key\n"
                        "FROM base AS final\n"
                        "RUN echo final > /final.txt\n"}},
                      "main", {}, {{"busybox", busybox}});
  write_file(env.tmp / "deploy_key", secret);
  auto cfg = env.config();
  cfg.build_secrets = {{"deploy_key", env.tmp / "deploy_key"}};
  bw::BuildPipelineRunner runner(cfg);
  REQUIRE(runner.check());
  auto job = env.job("options", "acme/options");
  job.build.dockerfile_path = "Dockerfile";
  job.build.context_dir = ".";
  job.build.build_args = {{"GREETING", "hello-from-buildArgs"}};
  job.build.target = "base";
  job.build.image_labels = {{"org.example.team", "builds"}};
  job.build.build_secrets = {"deploy_key"};
  Events events;
  const auto r = run_job(runner, job, events.fn(), {});
  INFO(r.error << "\n" << r.logs);
  REQUIRE(r.success);

  TempDir image;
  const std::string metadata = extract_image(env.registry, r.image_url, image.path());
  const auto greeting = find_in_layers(image.path(), "greeting.txt");
  const auto length = find_in_layers(image.path(), "secret-length.txt");
  REQUIRE(greeting);
  REQUIRE(length);
  CHECK(read_file(*greeting) == "hello-from-buildArgs\n");
  CHECK(std::stoul(read_file(*length)) == secret.size());  // the secret was mounted for the step
  CHECK_FALSE(find_in_layers(image.path(), "final.txt"));  // target: the base stage only
  CHECK_THAT(env.registry.inspect(env.registry.host() + "/team/app:v1"),
             Catch::Contains("\"org.example.team\": \"builds\""));
  // The secret is nowhere but where the step read it.
  CHECK_FALSE(tree_contains(image.path(), {secret}));
  CHECK(metadata.find(secret) == std::string::npos);
  CHECK(r.logs.find(secret) == std::string::npos);
  CHECK(events.all_lines().find(secret) == std::string::npos);
  CHECK_THAT(r.logs, Catch::Contains("[redacted]"));  // the step printed it; the log holds the mark

  // A secret the worker does not hold fails the job before anything runs.
  job.id = "unknown-secret";
  job.build.build_secrets = {"npm"};
  const auto refused = run_job(runner, job, {}, {});
  CHECK_FALSE(refused.success);
  CHECK_THAT(refused.error, Catch::StartsWith("buildSecrets: this worker holds no build secret named 'npm'"));
  CHECK_THAT(refused.logs, !Catch::Contains("Cloning"));

  // A failing step that prints the secret, plain and in base64: the error
  // quotes the step's last lines, with the secret redacted there too.
  env.git.create_repo("acme/leaky",
                      {{"Dockerfile", sample_dockerfile("RUN --mount=type=secret,id=deploy_key echo \"key=$(cat "
                                                        "/run/secrets/deploy_key)\" && echo \"b64=$(base64 "
                                                        "/run/secrets/deploy_key)\" && exit 5\n")}},
                      "main", {}, {{"busybox", busybox}});
  auto leaky = env.job("leaky", "acme/leaky");
  leaky.build.dockerfile_path = "Dockerfile";
  leaky.build.context_dir = ".";
  leaky.build.build_secrets = {"deploy_key"};
  Events leaky_events;
  const auto failed = run_job(runner, leaky, leaky_events.fn(), {});
  INFO(failed.error << "\n" << failed.logs);
  CHECK_FALSE(failed.success);
  CHECK_THAT(failed.error, Catch::StartsWith("build step failed at STEP 4/4: RUN --mount=type=secret"));
  CHECK_THAT(failed.error, Catch::Contains("exited with code") && Catch::Contains("\nkey=[redacted]\n") &&
                               Catch::Contains("\nb64=[redacted]"));
  for (const auto& form : {secret, bw::base64_encode(secret)}) {
    CAPTURE(form);
    CHECK(failed.error.find(form) == std::string::npos);
    CHECK(failed.logs.find(form) == std::string::npos);
    CHECK(leaky_events.all_lines().find(form) == std::string::npos);
  }
}

TEST_CASE("the image cache is pruned to its budget between jobs, never beside a running build",
          "[pipeline][cache]") {
  PipelineEnv env;
  // The long build holds in its RUN step until the short job has ended.
  env.create_sample_repo("acme/long", "RUN echo long-holding && " + fill_the_pipe + " && echo long > /long.txt\n");
  env.create_sample_repo("acme/short", "RUN echo short > /short.txt\n");
  auto cfg = env.config();
  cfg.cache_max_bytes = 1 << 20;  // 1 MiB: less than one image (busybox alone is 2 MB)
  cfg.cache_min_free_bytes = 0;
  std::mutex m;
  bool long_ended = false;
  std::vector<std::string> events;
  std::vector<bool> long_ended_at_event;
  cfg.on_event = [&](std::string_view what) {
    std::lock_guard lock(m);
    events.emplace_back(what);
    long_ended_at_event.push_back(long_ended);
  };
  bw::BuildPipelineRunner runner(cfg);
  Rendezvous rendezvous(2);  // the long job's build and the test
  std::atomic<bool> long_held{false};
  core::JobResult long_result;
  std::thread long_job([&] {
    long_result = runner.run(env.job("long", "acme/long"),
                             [&](std::string_view, std::string_view line) {
                               if (line != "long-holding") return;
                               long_held = rendezvous.arrive_and_wait("long building", 120s) &&
                                           rendezvous.arrive_and_wait("short ended", 120s);
                             },
                             {});
    std::lock_guard lock(m);
    long_ended = true;
  });
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join{long_job};
  REQUIRE(rendezvous.arrive_and_wait("long building", 120s));
  // The short job runs and ends while the long one builds: the store is then
  // over its budget, and the prune is due, but waits for the long build.
  const auto short_job = env.job("short", "acme/short");
  const auto short_result = runner.run(short_job, {}, {});
  runner.after_result(short_job);
  INFO(short_result.error << "\n" << short_result.logs);
  CHECK(short_result.success);
  CHECK(wait_until([&] { return runner.cache_stats().size_bytes > cfg.cache_max_bytes; }, 60s));  // measured
  {
    std::lock_guard lock(m);
    CHECK_FALSE(long_ended);
    INFO(fmt_events(events));
    CHECK(std::none_of(events.begin(), events.end(), [](auto& e) { return e.rfind("pruned", 0) == 0; }));
  }
  CHECK(runner.cache_stats().prunes == 0);
  rendezvous.arrive_and_wait("short ended", 120s);
  long_job.join();
  runner.after_result(env.job("long", "acme/long"));
  runner.settle();
  INFO(long_result.error << "\n" << long_result.logs);
  CHECK(long_held);
  CHECK(long_result.success);  // undisturbed
  auto stats = runner.cache_stats();
  CHECK(stats.prunes >= 1);
  CHECK(stats.pruned_images > 0);
  CHECK(stats.size_bytes <= cfg.cache_max_bytes);
  {
    std::lock_guard lock(m);
    INFO(fmt_events(events));
    REQUIRE_FALSE(events.empty());
    CHECK_THAT(events.back(), Catch::StartsWith("pruned the image cache"));
    for (bool ended : long_ended_at_event) CHECK(ended);  // no prune beside the long build
  }
  // The next job builds from what is left, and the store fits again after it.
  const auto next = run_job(runner, env.job("next", "acme/short"), {}, {});
  CHECK(next.success);
  CHECK(runner.cache_stats().size_bytes <= cfg.cache_max_bytes);
}

TEST_CASE("a prune removes the least recently used images first: an image a build took from the cache outlives a "
          "newer one no build used",
          "[pipeline][cache]") {
  PipelineEnv env;
  // Three images of one 4 MiB layer each (FROM scratch, one COPY: one image
  // per build); the budget holds two.
  constexpr std::size_t image_bytes = 4 << 20;
  for (std::string n : {"a", "b", "c"}) {
    env.git.create_repo("acme/lru-" + n, {{"Dockerfile", "FROM scratch\nCOPY " + n + ".bin /" + n + ".bin\n"},
                                          {n + ".bin", random_hex(image_bytes)}});
  }
  auto cfg = env.config();
  cfg.cache_max_bytes = 11 << 20;  // two images and the store's own files, at 80%: 8.8 MiB
  cfg.cache_min_free_bytes = 0;
  bw::BuildPipelineRunner runner(cfg);
  const ImageStore store(runner);
  const auto image_ids = [&] {
    std::set<std::string> ids;
    for (const auto& image : store.images()) ids.insert(image.at("id").get<std::string>());
    return ids;
  };
  const auto build = [&](const std::string& n, const std::string& id) {
    auto job = env.job(id, "acme/lru-" + n);
    job.build.dockerfile_path = "Dockerfile";
    job.build.context_dir = ".";
    job.build.image_name = "lru-" + n + ":1";
    const auto result = run_job(runner, job, {}, {});
    INFO(result.error << "\n" << result.logs);
    REQUIRE(result.success);
    return result;
  };
  // a, then b: both fit.
  build("a", "a");
  const auto after_a = image_ids();
  REQUIRE(after_a.size() == 1);
  INFO("store after a: " << runner.cache_stats().size_bytes << " bytes");
  CHECK(runner.cache_stats().size_bytes < cfg.cache_max_bytes / 10 * 8 / 2);
  build("b", "b");
  auto after_b = image_ids();
  REQUIRE(after_b.size() == 2);
  CHECK(runner.cache_stats().prunes == 0);
  // a again: its step comes from the cache, so a is now used after b.
  const auto again = build("a", "a-again");
  CHECK(again.cached_steps == 1);
  CHECK(image_ids() == after_b);
  // c: three images are over the budget; b, the least recently used, goes.
  build("c", "c");
  const auto left = image_ids();
  const auto stats = runner.cache_stats();
  CHECK(stats.prunes == 1);
  CHECK(stats.pruned_images == 1);
  CHECK(stats.size_bytes <= cfg.cache_max_bytes / 10 * 8);
  const std::string a = *after_a.begin();
  after_b.erase(a);
  const std::string b = *after_b.begin();
  CHECK(left.size() == 2);
  CHECK(left.count(a) == 1);
  CHECK(left.count(b) == 0);
}

TEST_CASE("the image cache is pruned when its file system has less than cache_min_free_bytes free, and the worker's "
          "metrics count the prune",
          "[pipeline][cache]") {
  PipelineEnv env;
  env.create_sample_repo();
  auto cfg = env.config();
  cfg.cache_max_bytes = 0;  // no size budget: the floor alone
  cfg.cache_min_free_bytes = std::uint64_t{1} << 60;  // 1 EiB: more than any disk has free
  std::mutex m;
  std::vector<std::string> events;
  cfg.on_event = [&](std::string_view what) {
    std::lock_guard lock(m);
    events.emplace_back(what);
  };
  bw::BuildPipelineRunner runner(cfg);
  bw::MeteredRunner metered(runner, &runner);
  runner.settle();  // the first measurement, of a store no build made yet
  const auto before = runner.cache_stats();
  const core::Job job = env.job("floor");
  const auto result = metered.run(job, {}, {});
  metered.after_result(job);
  runner.settle();
  INFO(result.error << "\n" << result.logs);
  REQUIRE(result.success);
  const auto stats = runner.cache_stats();
  CHECK(stats.prunes == before.prunes + 1);
  const auto pruned = stats.pruned_images - before.pruned_images;
  CHECK(pruned > 0);
  CHECK(ImageStore(runner).images().empty());  // the floor cannot be met: every image went
  {
    std::lock_guard lock(m);
    INFO(fmt_events(events));
    REQUIRE_FALSE(events.empty());
    const std::string removed = std::to_string(pruned) + " of " + std::to_string(pruned) + " images removed";
    const std::string floor = "at least " + std::to_string(cfg.cache_min_free_bytes) + " bytes free";
    CHECK_THAT(events.back(),
               Catch::StartsWith("pruned the image cache") && Catch::Contains(removed) && Catch::Contains(floor));
  }
  const auto metrics = metered.render();
  CHECK_THAT(metrics, Catch::Contains("blacktree_worker_cache_prunes_total " + std::to_string(stats.prunes) + "\n") &&
                          Catch::Contains("blacktree_worker_cache_pruned_images_total " +
                                          std::to_string(stats.pruned_images) + "\n"));
}

TEST_CASE("a rebuild of the next commit takes the base image and the unchanged step from the cache, runs the "
          "changed step and pushes the changed image",
          "[pipeline][cache]") {
  PipelineEnv env;
  const std::string base_ref = env.push_base_image();
  // The RUN step prints "ran-42" only when it runs (its command line, echoed
  // in the log, reads "ran-$((6*7))").
  env.git.create_repo("acme/app", {{"Dockerfile", "FROM " + base_ref +
                                                      "\nRUN echo \"ran-$((6*7))\" && mkdir -p /srv && echo built > "
                                                      "/srv/run.txt\nCOPY hello.txt /srv/hello.txt\n"},
                                   {"hello.txt", "hello from the repository\n"}});
  bw::BuildPipelineRunner runner(env.config());  // its cache is empty: the first job pulls the base
  bw::MeteredRunner metered(runner, &runner);    // the worker's /metrics
  const auto run_metered = [&](const core::Job& job, Events& events) {
    auto result = metered.run(job, events.fn(), {});
    metered.after_result(job);
    runner.settle();
    return result;
  };
  auto job = env.job("cold");
  job.build.dockerfile_path = "Dockerfile";
  job.build.context_dir = ".";
  Events first_events;
  const auto first = run_metered(job, first_events);
  INFO(first.error << "\n" << first.logs);
  REQUIRE(first.success);
  CHECK_THAT(first.logs, Catch::Contains("\nran-42\n"));
  // The base's layers came from the registry: the busybox layer and the
  // --install layer, each copied into the store.
  const auto first_pull = base_pull_lines(first_events);
  INFO(fmt_events(first_pull));
  REQUIRE_FALSE(first_pull.empty());
  CHECK(first_pull.front() == "Trying to pull " + base_ref + "...");
  CHECK(blobs_copied(first_pull) == 2);

  // The next commit on the same branch changes one line of hello.txt.
  env.git.commit("acme/app", {{"hello.txt", "hello after a change\n"}});
  job.id = "warm";
  job.build.image_name = "app:v2";
  Events second_events;
  const auto second = run_metered(job, second_events);
  INFO(second.error << "\n" << second.logs);
  REQUIRE(second.success);
  // The base is not fetched again: the pull finds it in the store and prints
  // its id (the one the first pull ended with), nothing else.
  const auto second_pull = base_pull_lines(second_events);
  INFO(fmt_events(second_pull));
  CHECK(second_pull == std::vector<std::string>{first_pull.back()});
  // The RUN step came from the cache (it did not print); the COPY of the
  // changed file ran again.
  std::size_t cached = 0;
  for (auto at = second.logs.find("Using cache"); at != std::string::npos; at = second.logs.find("Using cache", at + 1)) {
    ++cached;
  }
  CHECK(cached == 1);
  CHECK_THAT(second.logs, !Catch::Contains("\nran-42\n"));
  // The status says so too, with the time of each stage.
  CHECK(first.cached_steps == 0);
  CHECK(first.built_steps == 2);
  CHECK(second.cached_steps == 1);
  CHECK(second.built_steps == 1);
  CHECK(first.cached_by_step == std::vector<bool>{false, false});
  CHECK(second.cached_by_step == std::vector<bool>{true, false});  // the first step's cache, the changed one ran
  for (const char* stage : {"cloning", "building", "pushing"}) {
    CAPTURE(stage);
    REQUIRE(second.stage_durations.contains(stage));
    CHECK(second.stage_durations.at(stage) > std::chrono::milliseconds::zero());
  }
  CHECK(second.image_digest != first.image_digest);
  // ... and the worker's metrics.
  const auto metrics = metered.render();
  CHECK_THAT(metrics, Catch::Contains("blacktree_worker_build_steps_total{cache=\"hit\"} 1\n") &&
                          Catch::Contains("blacktree_worker_build_steps_total{cache=\"miss\"} 3\n") &&
                          Catch::Contains("blacktree_worker_stage_duration_seconds_count{stage=\"building\"} 2\n") &&
                          Catch::Contains("blacktree_worker_jobs_total{outcome=\"succeeded\"} 2\n") &&
                          Catch::Contains("blacktree_worker_cache_size_bytes "));
  CHECK_THAT(metrics, !Catch::Contains("blacktree_worker_cache_size_bytes 0\n"));

  TempDir image;
  extract_image(env.registry, second.image_url, image.path());
  const auto hello = find_in_layers(image.path(), "srv/hello.txt");
  const auto run_txt = find_in_layers(image.path(), "srv/run.txt");
  REQUIRE(hello);
  REQUIRE(run_txt);
  CHECK(read_file(*hello) == "hello after a change\n");
  CHECK(read_file(*run_txt) == "built\n");
  CHECK(find_in_layers(image.path(), "bin/busybox"));  // from the base
  CHECK(env.work_root_empty());
}

TEST_CASE("the job's timeout stops a sleeping build within seconds and leaves no process", "[pipeline]") {
  PipelineEnv env;
  env.create_sample_repo("acme/app", "RUN sleep 317\n");
  bw::BuildPipelineRunner runner(env.config());
  auto job = env.job("job-timeout");
  job.timeout = 20s;
  ProcWatcher watcher({});
  const auto t0 = std::chrono::steady_clock::now();
  const auto result = run_job(runner, job, {}, {});
  const auto elapsed = std::chrono::steady_clock::now() - t0;
  watcher.stop();
  INFO(result.error << "\n" << result.logs);
  CHECK_FALSE(result.success);
  CHECK_THAT(result.error, Catch::Contains("timed out after 20s during the build"));
  CHECK(elapsed < 20s + 10s);
  const auto sleepers = watcher.pids_matching("sleep 317");
  CHECK_FALSE(sleepers.empty());  // the build did reach the sleep
  for (pid_t pid : sleepers) CHECK(process_gone(pid));
  for (pid_t pid : watcher.pids_matching(env.work_root.string())) CHECK(process_gone(pid));
  CHECK(env.work_root_empty());
  // The killed build's container is removed (and unmounted) once no build runs.
  runner.settle();
  for (const auto& point : mounts_below(env.tmp / "cache")) CHECK_THAT(point, !Catch::EndsWith("/merged"));
}

TEST_CASE("cancelling a job stops its build within seconds and leaves no process", "[pipeline]") {
  PipelineEnv env;
  env.create_sample_repo("acme/app", "RUN sleep 317\n");
  bw::BuildPipelineRunner runner(env.config());
  std::stop_source stop;
  std::atomic<std::int64_t> requested_at{0};
  ProcWatcher watcher({}, [&](pid_t, const std::string& cmd) {
    if (cmd.find("sleep 317") != std::string::npos && !stop.stop_requested()) {
      requested_at = std::chrono::steady_clock::now().time_since_epoch().count();
      stop.request_stop();  // the Cancel RPC, once the build is busy
    }
  });
  const auto result = run_job(runner, env.job("job-cancel"), {}, stop.get_token());
  const auto returned_at = std::chrono::steady_clock::now();
  watcher.stop();
  INFO(result.error << "\n" << result.logs);
  CHECK_FALSE(result.success);
  REQUIRE(stop.stop_requested());
  CHECK_THAT(result.error, Catch::Contains("cancelled during the build"));
  const auto took = returned_at - std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(requested_at.load()));
  CHECK(took < 10s);
  for (pid_t pid : watcher.pids_matching("sleep 317")) CHECK(process_gone(pid));
  for (pid_t pid : watcher.pids_matching(env.work_root.string())) CHECK(process_gone(pid));
  CHECK(env.work_root_empty());
}

TEST_CASE("clone failures: missing or wrong token and unknown branch or repository", "[pipeline]") {
  PipelineEnv env;
  env.create_sample_repo();
  bw::BuildPipelineRunner runner(env.config());

  auto job = env.job("no-token");
  job.build.github_token = core::Secret();
  auto r = run_job(runner, job, {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("access to repository acme/app was refused: the githubToken is missing"));

  job = env.job("wrong-token");
  job.build.github_token = core::Secret("ghs_wrong" + random_hex(20));
  r = run_job(runner, job, {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("the githubToken is wrong or lacks read access"));
  CHECK(r.error.find(job.build.github_token.reveal()) == std::string::npos);
  CHECK(r.logs.find(job.build.github_token.reveal()) == std::string::npos);

  job = env.job("no-branch");
  job.build.branch = "feature/missing";
  r = run_job(runner, job, {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("branch 'feature/missing' not found in repository acme/app"));

  job = env.job("no-repo", "acme/nothing-here");
  r = run_job(runner, job, {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("repository acme/nothing-here not found"));
  CHECK(env.work_root_empty());
}

TEST_CASE("a missing Dockerfile and a failing build step are reported with their output and secrets redacted",
          "[pipeline]") {
  PipelineEnv env;
  env.create_sample_repo();
  // A build that prints the secrets (as a careless Dockerfile might) and fails.
  env.git.create_repo("acme/broken",
                      {{"Dockerfile", sample_dockerfile("RUN echo compiling the thing && echo token=" + env.token +
                                                        " pw=" + env.registry.password() + " b64=" +
                                                        bw::base64_encode("x-access-token:" + env.token) +
                                                        " && exit 3\n")}},
                      "main", {}, {{"busybox", busybox}});
  bw::BuildPipelineRunner runner(env.config());

  auto job = env.job("no-dockerfile");
  job.build.dockerfile_path = "app/Nope.Dockerfile";
  auto r = run_job(runner, job, {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("dockerfilePath: 'app/Nope.Dockerfile' does not exist in the repository"));

  job = env.job("broken", "acme/broken");
  job.build.dockerfile_path = "Dockerfile";
  job.build.context_dir = "";
  Events events;
  r = run_job(runner, job, events.fn(), {});
  INFO(r.error);
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("build step failed at STEP 4/4: RUN echo compiling the thing"));
  CHECK_THAT(r.error, Catch::Contains("exited with code") && Catch::Contains("compiling the thing"));
  // (the base64 of the header keeps its non-secret prefix "x-access-token:")
  CHECK_THAT(r.logs, Catch::Contains("token=[redacted] pw=[redacted] b64=eC1hY2Nlc3MtdG9rZW46[redacted]"));
  for (const auto& text : {r.error, r.logs, events.all_lines()}) {
    for (const auto& form : secret_forms(env.token)) CHECK(text.find(form) == std::string::npos);
    CHECK(text.find(env.registry.password()) == std::string::npos);
  }
  CHECK(env.work_root_empty());
}

TEST_CASE("a wrong registry password and an unreachable registry fail cleanly", "[pipeline]") {
  PipelineEnv env;
  env.create_sample_repo();
  write_file(env.tmp / "wrong-password", "not-the-password\n");
  auto cfg = env.config();
  cfg.credentials.password_file = env.tmp / "wrong-password";
  bw::BuildPipelineRunner wrong(cfg);
  auto r = run_job(wrong, env.job("wrong-pw"), {}, {});
  INFO(r.logs);
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("refused the push") && Catch::Contains("check the worker's registry credentials"));
  CHECK(r.error.find("not-the-password") == std::string::npos);
  CHECK(r.logs.find("not-the-password") == std::string::npos);
  CHECK(r.image_url.empty());

  cfg = env.config();
  cfg.registry = "127.0.0.1:" + std::to_string(free_port());
  bw::BuildPipelineRunner unreachable(cfg);
  r = run_job(unreachable, env.job("no-registry"), {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("push of " + cfg.registry + "/app:v1 failed"));
  CHECK(env.work_root_empty());
}

TEST_CASE("two jobs at once on one runner are isolated and leave nothing behind", "[pipeline]") {
  PipelineEnv env;
  for (std::string n : {"one", "two"}) {
    env.git.create_repo("acme/" + n,
                        // COPY . takes the whole clone, .git included, into the image.
                        {{"Dockerfile", sample_dockerfile("COPY " + n + ".txt /" + n + ".txt\nRUN ls -a / > /seen-by-" +
                                                          n + ".txt\nCOPY . /ctx/\n")},
                         {n + ".txt", "I am " + n + "\n"}},
                        "main", {}, {{"busybox", busybox}});
  }
  bw::BuildPipelineRunner runner(env.config());
  ProcWatcher watcher(secret_forms(env.token));
  core::JobResult results[2];
  std::thread threads[2];
  for (int i = 0; i < 2; ++i) {
    threads[i] = std::thread([&, i] {
      const std::string n = i == 0 ? "one" : "two";
      auto job = env.job("concurrent-" + n, "acme/" + n);
      job.build.dockerfile_path = "Dockerfile";
      job.build.context_dir = ".";
      job.build.image_name = "concurrent/" + n + ":latest";
      results[i] = run_job(runner, job, {}, {});
    });
  }
  for (auto& t : threads) t.join();
  watcher.stop();
  for (auto& r : results) {
    INFO(r.error << "\n" << r.logs);
    REQUIRE(r.success);
  }
  CHECK(results[0].image_digest != results[1].image_digest);
  for (int i = 0; i < 2; ++i) {
    const std::string mine = i == 0 ? "one" : "two";
    const std::string other = i == 0 ? "two" : "one";
    TempDir image;
    extract_image(env.registry, results[i].image_url, image.path());
    CHECK(find_in_layers(image.path(), mine + ".txt"));
    CHECK_FALSE(find_in_layers(image.path(), other + ".txt"));
    const auto seen = find_in_layers(image.path(), "seen-by-" + mine + ".txt");
    REQUIRE(seen);
    CHECK(read_file(*seen).find(other) == std::string::npos);
    // The clone's .git went into the image with the context, without the token.
    CHECK(find_in_layers(image.path(), "ctx/.git/config"));
    CHECK_FALSE(tree_contains(image.path(), secret_forms(env.token)));
  }
  // Each job had its own credentials file; both used the worker's one image store.
  std::set<std::string> authfiles;
  std::set<std::string> roots;
  for (const auto& cmd : watcher.cmdlines()) {
    if (cmd.find("buildah") == std::string::npos) continue;
    const auto a = cmd.find("--authfile ");
    if (a != std::string::npos) authfiles.insert(cmd.substr(a + 11, cmd.find(' ', a + 11) - a - 11));
    const auto r = cmd.find("--root ");
    if (r != std::string::npos) roots.insert(cmd.substr(r + 7, cmd.find(' ', r + 7) - r - 7));
  }
  CHECK(authfiles.size() == 2);
  CHECK(roots.size() == 1);
  for (const auto& f : authfiles) CHECK_FALSE(fs::exists(f));
  INFO("argv holding a secret: " << watcher.offender());
  CHECK_FALSE(watcher.secret_seen());
  CHECK(env.work_root_empty());
}

TEST_CASE("registry credentials from a docker credential helper", "[pipeline]") {
  // The protocol of docker-credential-ecr-login (AWS ECR): `<helper> get`,
  // the registry host on stdin, {"ServerURL","Username","Secret"} on stdout.
  // AWS itself cannot be reached from here, so this helper is the test's own
  // and serves the test registry's credentials.
  PipelineEnv env;
  env.create_sample_repo();
  const fs::path bin = env.tmp / "bin";
  write_file(bin / "docker-credential-blacktree-test",
             "#!/bin/sh\n"
             "[ \"$1\" = get ] || { echo \"unsupported: $1\" >&2; exit 2; }\n"
             "read -r server\n"
             "if [ \"$server\" != \"" + env.registry.host() + "\" ]; then\n"
             "  echo \"credentials not found in native keychain\"; exit 1\n"
             "fi\n"
             "printf '{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}\\n' \"$server\" '" +
                 env.registry.user() + "' '" + env.registry.password() + "'\n",
             fs::perms::owner_all);
  const std::string path = bin.string() + ":" + std::getenv("PATH");
  ::setenv("PATH", path.c_str(), 1);  // the worker finds helpers on its PATH

  auto cfg = env.config();
  cfg.credentials = {};
  cfg.credentials.kind = bw::RegistryCredentials::Kind::helper;
  cfg.credentials.helper = "blacktree-test";
  bw::BuildPipelineRunner runner(cfg);
  Events events;
  auto r = run_job(runner, env.job("helper"), events.fn(), {});
  INFO(r.error << "\n" << r.logs);
  CHECK(r.success);
  CHECK_THAT(env.registry.inspect(env.registry.host() + "/team/app:v1"), Catch::Contains(r.image_digest));
  CHECK(r.logs.find(env.registry.password()) == std::string::npos);

  // A helper that has no credentials for the registry.
  cfg.registry = "127.0.0.1:1/team";
  bw::BuildPipelineRunner unknown(cfg);
  r = run_job(unknown, env.job("helper-unknown"), {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("credential helper docker-credential-blacktree-test gave no credentials for "
                                      "127.0.0.1:1") &&
                          Catch::Contains("credentials not found"));

  cfg.credentials.helper = "absent-helper";
  bw::BuildPipelineRunner absent(cfg);
  r = run_job(absent, env.job("helper-absent"), {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("docker-credential-absent-helper"));
  CHECK(env.work_root_empty());
}

TEST_CASE("contextDir and dockerfilePath may not escape the clone through symlinks", "[pipeline][validation]") {
  PipelineEnv env;
  env.git.create_repo("acme/links", {{"app/Dockerfile", sample_dockerfile()}}, "main",
                      {{"to-etc", "/etc"},
                       {"up", ".."},
                       {"app/evil.Dockerfile", "../../../../../../../../etc/hostname"},
                       {"app/passwd.Dockerfile", "/etc/passwd"},
                       {"to-git", ".git"}},
                      {{"app/busybox", busybox}});
  bw::BuildPipelineRunner runner(env.config());
  const auto run_with = [&](std::string ctx, std::string df) {
    auto job = env.job("links", "acme/links");
    job.build.context_dir = std::move(ctx);
    job.build.dockerfile_path = std::move(df);
    return run_job(runner, job, {}, {});
  };
  auto r = run_with("to-etc", "app/Dockerfile");
  CHECK_THAT(r.error, Catch::Contains("contextDir: 'to-etc' resolves outside the repository through a symlink"));
  r = run_with("up", "app/Dockerfile");
  CHECK_THAT(r.error, Catch::Contains("contextDir: 'up' resolves outside the repository through a symlink"));
  r = run_with("app", "app/evil.Dockerfile");
  CHECK_THAT(r.error, Catch::Contains("dockerfilePath: 'app/evil.Dockerfile' resolves outside the repository"));
  r = run_with("app", "app/passwd.Dockerfile");
  CHECK_THAT(r.error, Catch::Contains("dockerfilePath: 'app/passwd.Dockerfile' resolves outside the repository"));
  r = run_with("to-git", "app/Dockerfile");
  CHECK_THAT(r.error, Catch::Contains("contextDir: 'to-git' must not point into the repository's .git directory"));
  r = run_with("app", "up/etc/passwd");
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("dockerfilePath: 'up/etc/passwd' resolves outside the repository"));
  // The same layout with the real Dockerfile builds: the refusals were the symlinks.
  r = run_with("app", "app/Dockerfile");
  INFO(r.error);
  CHECK(r.success);
  CHECK(env.work_root_empty());
}

TEST_CASE("invalid fields are refused before anything runs and the error names the field and the rule",
          "[pipeline][validation]") {
  // Refused before any network access: no servers needed. http:// and
  // file:// repositories are off, as in production.
  TempDir tmp;
  bw::BuildPipelineConfig cfg;
  cfg.work_root = tmp / "jobs";
  cfg.registry = "127.0.0.1:1";
  bw::BuildPipelineRunner runner(cfg);
  const auto work_root_empty = [&] { return !fs::exists(cfg.work_root) || fs::is_empty(cfg.work_root); };
  const auto refused = [&](const std::function<void(TestJob&)>& change, const std::string& expected) {
    TestJob job;
    job.id = "invalid";
    job.build = {"acme/app", "main", "app/Dockerfile", "app", "app:v1", core::Secret("ghs_x")};
    change(job);
    ProcWatcher watcher({});
    auto r = run_job(runner, job, {}, {});
    watcher.stop();
    INFO(expected);
    CHECK_FALSE(r.success);
    CHECK_THAT(r.error, Catch::StartsWith(expected));
    // Nothing ran: no clone, no job directory.
    for (const auto& cmd : watcher.cmdlines()) CHECK(cmd.find(cfg.work_root.string()) == std::string::npos);
    CHECK(work_root_empty());
    return r;
  };
  refused([](auto& j) { j.build.branch = "--upload-pack=touch /tmp/pwned"; }, "branch: must not start with '-'");
  refused([](auto& j) { j.build.branch = "a..b"; }, "branch: must not contain '..'");
  refused([](auto& j) { j.build.branch = "x~1"; }, "branch: must not contain '~'");
  refused([](auto& j) { j.build.branch = "topic.lock"; }, "branch: no component may end with '.lock'");
  refused([](auto& j) { j.build.branch = ""; }, "branch: must not be empty");
  refused([](auto& j) { j.build.dockerfile_path = "/etc/passwd"; }, "dockerfilePath: must be relative");
  refused([](auto& j) { j.build.dockerfile_path = "../Dockerfile"; }, "dockerfilePath: must not contain '..'");
  refused([](auto& j) { j.build.dockerfile_path = "app/./Dockerfile"; }, "dockerfilePath: must be normalised");
  refused([](auto& j) { j.build.context_dir = "app/../.."; }, "contextDir: must not contain '..'");
  refused([](auto& j) { j.build.context_dir = "app//x"; }, "contextDir: must be normalised");
  refused([](auto& j) { j.build.context_dir = "/"; }, "contextDir: must be relative");
  refused([](auto& j) { j.build.image_name = "App:v1"; }, "imageName: 'App' is not a valid repository path component");
  refused([](auto& j) { j.build.image_name = "evil.example.com/app"; }, "imageName: must not name a registry host");
  refused([](auto& j) { j.build.image_name = "app@sha256:abc"; }, "imageName: must not contain a digest");
  refused([](auto& j) { j.build.image_name = "app:-x"; }, "imageName: the tag must start with");
  refused([](auto& j) { j.build.repo_url = "http://127.0.0.1:1/acme/app.git"; },
          "repoUrl: http:// URLs are not allowed");
  refused([](auto& j) { j.build.repo_url = "https://x-access-token:abc@github.com/acme/app"; },
          "repoUrl: must not hold credentials");
  refused([](auto& j) { j.build.repo_url = "ext::sh -c touch% /tmp/pwned"; }, "repoUrl: must not contain spaces");
  refused([](auto& j) { j.build.repo_url = "git@github.com:acme/app.git"; }, "repoUrl: must be 'owner/name'");
  refused([](auto& j) { j.build.repo_url = "file:///etc"; }, "repoUrl: file:// URLs are not allowed");
  refused([](auto& j) { j.build.repo_url = "-acme/app"; }, "repoUrl: must not start with '-'");
  // The build options (JobRequest buildArgs, target, imageLabels, buildSecrets).
  refused([](auto& j) { j.build.build_args = {{"1ST", "x"}}; }, "buildArgs: a name must be letters, digits and '_'");
  refused([](auto& j) { j.build.build_args = {{"A=B", "x"}}; }, "buildArgs: a name must be letters, digits and '_'");
  refused([](auto& j) { j.build.build_args = {{"--network", "host"}}; }, "buildArgs: a name must be letters");
  refused([](auto& j) { j.build.target = "-stage"; }, "target: must be a stage name");
  refused([](auto& j) { j.build.target = "base --pull"; }, "target: must be a stage name");
  refused([](auto& j) { j.build.image_labels = {{"team=x", "y"}}; }, "imageLabels: a key must be 1 to 256 printable");
  refused([](auto& j) { j.build.image_labels = {{"a key", "y"}}; }, "imageLabels: a key must be 1 to 256 printable");
  refused([](auto& j) { j.build.build_secrets = {"../deploy_key"}; }, "buildSecrets: a name must be 1 to 64");
  refused([](auto& j) { j.build.build_secrets = {"npm", "npm"}; }, "buildSecrets: each name at most once");
  // A refused value is not quoted: it may be a secret someone put there.
  const std::string value = "pw-" + random_hex(16) + "\nsecond line";
  auto r = refused([&](auto& j) { j.build.build_args = {{"PASSWORD", value}}; },
                   "buildArgs: a value must be at most 4096 bytes without control characters");
  CHECK(r.error.find(value.substr(0, 19)) == std::string::npos);
  r = refused([&](auto& j) { j.build.image_labels = {{"org.example.note", value}}; },
              "imageLabels: a value must be at most 4096 bytes without control characters");
  CHECK(r.error.find(value.substr(0, 19)) == std::string::npos);
}

TEST_CASE("validators accept what git and registries accept", "[validation]") {
  for (auto b : {"main", "feature/x-1", "release-1.2", "user@host", "a.b/c_d"}) CHECK(bw::validate_branch(b));
  for (auto b : {"-x", "a b", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/", "a//b", ".a", "a/.b", "a.", "@", "a@{1}"}) {
    INFO(b);
    CHECK_FALSE(bw::validate_branch(b));
  }
  for (auto p : {"Dockerfile", "a/b/Dockerfile", "docker/Dockerfile.prod"}) {
    CHECK(bw::validate_repo_path("dockerfilePath", p, false));
  }
  CHECK(bw::validate_repo_path("contextDir", ".", true));
  CHECK_FALSE(bw::validate_repo_path("dockerfilePath", ".", false));
  // A runner's startup check names what is missing.
  bw::BuildPipelineConfig cfg;
  CHECK_THAT(bw::BuildPipelineRunner(cfg).check().error().message(), Catch::StartsWith("registry: not set"));
  cfg.registry = "127.0.0.1:1";
  cfg.git_program = "blacktree-no-git";
  CHECK_THAT(bw::BuildPipelineRunner(cfg).check().error().message(),
             Catch::StartsWith("git_program 'blacktree-no-git'"));
  for (auto n : {"app", "team/app:v1.2", "a-b/c__d/e.f:latest", "app:_x"}) {
    INFO(n);
    CHECK(bw::validate_image_name(n));
  }
  for (auto n : {"", "App", "app:", "a//b", "/a", "a/", "localhost/app", "host:5000/app", "a--", "-a"}) {
    INFO(n);
    CHECK_FALSE(bw::validate_image_name(n));
  }
  bw::RepoUrlRules rules;
  auto loc = bw::resolve_repo_url("acme/app", rules);
  REQUIRE(loc);
  CHECK(loc->url == "https://github.com/acme/app.git");
  CHECK(loc->origin == "https://github.com/");
  loc = bw::resolve_repo_url("https://ghe.example.com:8443/org/repo", rules);
  REQUIRE(loc);
  CHECK(loc->origin == "https://ghe.example.com:8443/");
  CHECK_FALSE(bw::resolve_repo_url("http://ghe.example.com/org/repo", rules));
  rules.allow_http = true;
  CHECK(bw::resolve_repo_url("http://ghe.example.com/org/repo", rules));
  CHECK_FALSE(bw::resolve_repo_url("acme/../etc", rules));
  CHECK_FALSE(bw::resolve_repo_url("file:///srv/repo.git", rules));
  rules.allow_file = true;
  loc = bw::resolve_repo_url("file:///srv/repo.git", rules);
  REQUIRE(loc);
  CHECK(loc->origin.empty());  // no token header for a local path
  CHECK_FALSE(bw::resolve_repo_url("https://h/a/../../b", rules));
}

TEST_CASE("the githubToken goes only to the configured git hosts, checked before any connection",
          "[pipeline][security]") {
  PipelineEnv env;  // its git server is the configured GitHub base URL
  env.create_sample_repo();
  // Another server: a host the token is not meant for. It records every request.
  GitServer foreign(env.tmp / "foreign", "the-foreign-servers-own-token");
  foreign.create_repo("evil/app", {{"Dockerfile", "FROM scratch\n"}});
  const std::string foreign_authority = "127.0.0.1:" + std::to_string(foreign.port());
  bw::BuildPipelineRunner runner(env.config());

  auto job = env.job("foreign", foreign.base_url() + "/evil/app.git");
  auto r = run_job(runner, job, {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("repoUrl") && Catch::Contains(foreign_authority) &&
                          Catch::Contains("token_hosts"));
  CHECK(read_file(foreign.requests_log()).empty());  // not even a connection

  // Another name for the same server is another host too.
  job = env.job("alias", "http://localhost:" + std::to_string(env.git.port()) + "/acme/app.git");
  r = run_job(runner, job, {}, {});
  CHECK_FALSE(r.success);
  CHECK_THAT(r.error, Catch::Contains("token_hosts"));

  // Without a token there is nothing to leak: the clone goes ahead (and the
  // foreign server, which wants its own token, refuses it).
  job = env.job("anonymous", foreign.base_url() + "/evil/app.git");
  job.build.github_token = core::Secret();
  r = run_job(runner, job, {}, {});
  CHECK_THAT(r.error, Catch::Contains("githubToken is missing"));
  CHECK_THAT(read_file(foreign.requests_log()), Catch::Contains("authorization_sent=False") &&
                                                   !Catch::Contains("authorization_sent=True"));

  // Allowed by name, the host gets the token.
  auto cfg = env.config();
  cfg.token_hosts = {foreign_authority};
  bw::BuildPipelineRunner allowing(cfg);
  job = env.job("allowed", foreign.base_url() + "/evil/app.git");
  r = run_job(allowing, job, {}, {});
  CHECK_THAT(r.error, Catch::Contains("wrong or lacks read access"));
  CHECK_THAT(read_file(foreign.requests_log()), Catch::Contains("authorization_sent=True"));
  CHECK(env.work_root_empty());
}

namespace {

// A TCP listener of the test's own on 127.0.0.1 (or all interfaces): a RUN
// step that connects to it would be accepted in its backlog.
class Listener {
 public:
  explicit Listener(bool all_interfaces = false) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(all_interfaces ? INADDR_ANY : INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 16) != 0) {
      throw std::runtime_error("listener");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener() { ::close(fd_); }
  int port() const { return port_; }
  /// Connections that reached it so far (each accepted and closed).
  int accepted() {
    int n = 0;
    for (int c; (c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0; ++n) ::close(c);
    return n;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// This host's first IPv4 address that is not loopback ("" when it has none).
std::string host_address() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  std::string found;
  for (auto* a = list; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET || (a->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof text);
    found = text;
  }
  ::freeifaddrs(list);
  return found;
}

// RUN lines that try each address and print REACHED or BLOCKED for it; the
// first tries to lift the block (a RUN step must not be able to).
std::string probe_steps(int loopback_port, const std::string& host_ip, int host_port) {
  std::string steps = "RUN ip route del unreachable 169.254.0.0/16 2>&1 || true\n"
                      "RUN if ip route | grep -q '^default'; then echo HAS-DEFAULT-ROUTE; fi\n";
  const auto probe = [&](const std::string& name, const std::string& ip, int port) {
    // nc exits 1 when it cannot connect; connected, it waits for the peer
    // (or the timeout kills it).
    steps += "RUN timeout 8 nc -w 3 " + ip + " " + std::to_string(port) + " </dev/null; if [ $? = 1 ]; then echo " +
             name + "-BLOCKED; else echo " + name + "-REACHED; fi\n";
  };
  probe("LOOPBACK", "127.0.0.1", loopback_port);
  probe("METADATA", "169.254.169.254", 80);
  if (!host_ip.empty()) probe("HOSTADDR", host_ip, host_port);
  return steps;
}

// The probe job under each build_network; the worker's user (root or not) is
// whoever runs this.
void check_run_steps_are_boxed() {
  PipelineEnv env;
  Listener loopback;
  Listener everywhere(true);
  const std::string host_ip = host_address();
  env.create_sample_repo("acme/probe", probe_steps(loopback.port(), host_ip, everywhere.port()));
  auto job = env.job("probe", "acme/probe");
  job.timeout = 120s;

  // The default: a network of its own.
  bw::BuildPipelineRunner runner(env.config());
  REQUIRE(runner.check());
  auto r = run_job(runner, job, {}, {});
  INFO(r.error << "\n" << r.logs);
  REQUIRE(r.success);
  // (a line of its own: the RUN commands echoed in the log hold both words)
  CHECK_THAT(r.logs, Catch::Contains("\nLOOPBACK-BLOCKED\n") && Catch::Contains("\nMETADATA-BLOCKED\n"));
  CHECK_THAT(r.logs, !Catch::Contains("\nLOOPBACK-REACHED\n") && !Catch::Contains("\nMETADATA-REACHED\n") &&
                         !Catch::Contains("\nHOSTADDR-REACHED\n"));
  if (!host_ip.empty()) CHECK_THAT(r.logs, Catch::Contains("\nHOSTADDR-BLOCKED\n"));
  CHECK_THAT(r.logs, Catch::Contains("\nHAS-DEFAULT-ROUTE\n"));  // outbound traffic has a way out
  CHECK(loopback.accepted() == 0);
  CHECK(everywhere.accepted() == 0);

  // none: not even a way out. Each network its own image cache, as each
  // worker has its own: a RUN step's result depends on the network, which is
  // not part of the cache key, so a shared cache would replay the probes.
  auto cfg = env.config();
  cfg.build_network = bw::BuildNetwork::none;
  cfg.cache_dir = env.tmp / "cache-none";
  r = bw::BuildPipelineRunner(cfg).run(job, {}, {});
  REQUIRE(r.success);
  CHECK_THAT(r.logs, Catch::Contains("\nLOOPBACK-BLOCKED\n") && !Catch::Contains("\nHAS-DEFAULT-ROUTE\n"));

  // host: the worker's network, as the operator asked (and the probe tells).
  cfg.build_network = bw::BuildNetwork::host;
  cfg.cache_dir = env.tmp / "cache-host";
  r = bw::BuildPipelineRunner(cfg).run(job, {}, {});
  REQUIRE(r.success);
  CHECK_THAT(r.logs, Catch::Contains("\nLOOPBACK-REACHED\n"));
  CHECK(loopback.accepted() == 1);
}

}  // namespace

TEST_CASE("RUN steps cannot reach the worker host's loopback, its addresses or the metadata address",
          "[pipeline][security]") {
  check_run_steps_are_boxed();
}

TEST_CASE("check() makes a network box at start and refuses one this host cannot make", "[pipeline][security]") {
  PipelineEnv env;
  auto cfg = env.config();
  REQUIRE(bw::BuildPipelineRunner(cfg).check());
  cfg.slirp4netns_program = "/nonexistent/slirp4netns";
  const auto checked = bw::BuildPipelineRunner(cfg).check();
  REQUIRE_FALSE(checked);
  CHECK_THAT(checked.error().message(), Catch::Contains("build_network private: cannot make the build's network box") &&
                                            Catch::Contains("slirp4netns_program"));
  cfg.build_network = bw::BuildNetwork::none;  // needs no slirp4netns
  CHECK(bw::BuildPipelineRunner(cfg).check());
}

// Run by the test below as the unprivileged user, never on its own.
TEST_CASE("rootless child: RUN steps are boxed", "[.rootless-child]") {
  REQUIRE(::geteuid() != 0);
  check_run_steps_are_boxed();
}

TEST_CASE("a rootless worker's RUN steps cannot reach the host's loopback, its addresses or the metadata address",
          "[pipeline][security][rootless]") {
  // The user scripts/install-deps.sh makes for this test: no login, its own
  // subordinate id range (as a rootless buildah user needs).
  const passwd* user = ::getpwnam("blacktree-rootless");
  if (::geteuid() != 0 || user == nullptr) {
    WARN("not run: needs root and the user blacktree-rootless (scripts/install-deps.sh makes it)");
    return;
  }
  // This test binary, run again as that user in a directory it owns: the
  // build tree may not be readable by other users.
  TempDir tmp("blacktree-rootless-");
  const fs::path self = tmp / "tests";
  fs::copy_file("/proc/self/exe", self);
  REQUIRE(::chown(tmp.path().c_str(), user->pw_uid, user->pw_gid) == 0);
  REQUIRE(::chmod(tmp.path().c_str(), 0755) == 0);
  bw::ProcessSpec child;
  child.argv = {"setpriv",      "--reuid=" + std::to_string(user->pw_uid), "--regid=" + std::to_string(user->pw_gid),
                "--init-groups", "--",                                       self.string(),
                "rootless child: RUN steps are boxed"};
  child.env = bw::minimal_environment(tmp.path());
  child.env["TMPDIR"] = tmp.path().string();
  child.timeout = 600s;
  std::string out;
  const auto outcome = bw::run_process(child, [&](std::string_view line) { out.append(line).append("\n"); });
  INFO(out);
  CHECK(outcome.ok());
  CHECK_THAT(out, Catch::Contains("All tests passed"));
}

TEST_CASE("a daemon a RUN step starts is gone when the job's status arrives", "[pipeline][security]") {
  PipelineEnv env;
  // A distinctive argv to find it by: sleep <random digits>.
  const std::string marker = "9" + std::to_string(std::random_device{}() % 900000 + 100000);
  env.create_sample_repo("acme/daemon", "RUN (setsid sleep " + marker +
                                            " </dev/null >/dev/null 2>&1 &) ; echo daemon started\n");
  bw::BuildPipelineRunner runner(env.config());
  const auto r = run_job(runner, env.job("daemon", "acme/daemon"), {}, {});
  INFO(r.error << "\n" << r.logs);
  CHECK(r.success);
  std::vector<pid_t> left;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = read_file(entry.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    const pid_t pid = std::stoi(name);
    if (cmdline.find("sleep " + marker) != std::string::npos && !process_gone(pid)) left.push_back(pid);
  }
  for (pid_t pid : left) ::kill(pid, SIGKILL);
  CHECK(left.empty());
}
