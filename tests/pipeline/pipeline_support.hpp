// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Fixtures for the pipeline tests: temporary directories, background servers
// (a token-checking git HTTP server, a docker-registry with htpasswd auth)
// on free loopback ports, and small helpers. Every server is started by the
// test case that uses it and stopped (process group killed) when it ends.

#include <blacktree/worker/log.hpp>
#include <blacktree/worker/process.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace blacktree::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

/// True when `pid` no longer runs: gone, or a zombie waiting for a parent
/// (an init that does not reap) to collect it.
inline bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return true;
  const auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z';
}

/// Detaches every mount below `dir`, deepest first: an overlay image store
/// keeps its home bind-mounted (and a killed build its container) after
/// buildah exits, which would keep a test's directory from being removed.
inline std::vector<std::string> mounts_below(const fs::path& dir) {
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::string> points;
  const std::string prefix = dir.string() + "/";
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    if (point.rfind(prefix, 0) == 0) points.push_back(point);
  }
  return points;
}

inline void unmount_below(const fs::path& dir) {
  auto points = mounts_below(dir);
  std::sort(points.begin(), points.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  for (const auto& p : points) ::umount2(p.c_str(), MNT_DETACH);
}

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const fs::path& p, std::string_view content, fs::perms perms = fs::perms::none) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << content;
  if (perms != fs::perms::none) fs::permissions(p, perms);
}

/// Polls `ready` until it holds or `limit` passes: for conditions that offer
/// nothing to block on (a port starting to accept, a file appearing).
inline bool wait_until(const std::function<bool()>& ready, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return ready();
}

inline bool port_accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

/// A port nobody listens on right now (bind 0, read it back, release it).
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("bind");
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// A directory removed with everything in it at scope exit.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "blacktree-pipeline-") {
    std::string templ = (fs::temp_directory_path() / (std::string(prefix) + "XXXXXX")).string();
    if (::mkdtemp(templ.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const noexcept { return path_; }
  fs::path operator/(std::string_view sub) const { return path_ / sub; }

 private:
  fs::path path_;
};

/// Runs a command to completion (argv, no shell) and returns its output;
/// throws with the output if it fails. For test setup only.
inline std::string run_ok(std::vector<std::string> argv, const fs::path& cwd = {},
                          std::map<std::string, std::string, std::less<>> extra_env = {}) {
  worker::ProcessSpec spec;
  spec.argv = std::move(argv);
  spec.env = worker::minimal_environment();
  spec.env["GIT_CONFIG_NOSYSTEM"] = "1";
  spec.env["GIT_CONFIG_GLOBAL"] = "/dev/null";
  for (auto& [k, v] : extra_env) spec.env[k] = v;
  spec.cwd = cwd;
  spec.timeout = 120s;
  std::string out;
  auto outcome = worker::run_process(spec, [&](std::string_view l) { out.append(l).append("\n"); });
  if (!outcome.ok()) {
    std::string cmd;
    for (auto& a : spec.argv) cmd += a + " ";
    throw std::runtime_error(cmd + outcome.describe() + ":\n" + out);
  }
  return out;
}

/// A server process in its own process group, killed (group and all) when
/// this object goes away; its output goes to `log`.
class BackgroundProcess {
 public:
  BackgroundProcess(std::vector<std::string> argv, const fs::path& log) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawnattr_init(&attr);
    ::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    ::posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    ::posix_spawnattr_setpgroup(&attr, 0);
    const int err = ::posix_spawnp(&pid_, args[0], &actions, &attr, args.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attr);
    if (err != 0) throw std::runtime_error("cannot start " + argv[0]);
  }
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;
  ~BackgroundProcess() { stop(); }

  bool running() const {
    int status = 0;
    return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(-pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    ::kill(-pid_, SIGKILL);  // anything left in its group
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

/// A git smart-HTTP server that requires `token` (tests/pipeline/git_http_server.py).
class GitServer {
 public:
  GitServer(const fs::path& dir, std::string token) : dir_(dir), token_(std::move(token)) {
    fs::create_directories(root());
    const fs::path port_file = dir_ / "git.port";
    write_file(dir_ / "git.token", token_);
    server_.emplace(std::vector<std::string>{"python3", BLACKTREE_PIPELINE_TEST_DIR "/git_http_server.py", "--root",
                                             root().string(), "--token-file", (dir_ / "git.token").string(), "--port-file", port_file.string(),
                                             "--log", requests_log().string()},
                    dir_ / "git-server.out");
    if (!wait_until([&] { return fs::exists(port_file); }, 20s)) {
      throw std::runtime_error("git server did not start: " + read_file(dir_ / "git-server.out"));
    }
    port_ = std::stoi(read_file(port_file));
    if (!wait_until([&] { return port_accepts(port_); }, 20s)) throw std::runtime_error("git server not accepting");
  }

  fs::path root() const { return dir_ / "git-root"; }
  fs::path requests_log() const { return dir_ / "git-requests.log"; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  /// Creates the bare repository `owner/name.git` whose branch `branch` holds
  /// `files` (path -> content) and `symlinks` (path -> target).
  void create_repo(const std::string& owner_name, const std::map<std::string, std::string>& files,
                   const std::string& branch = "main", const std::map<std::string, std::string>& symlinks = {},
                   const std::map<std::string, fs::path>& copies = {}) {
    const fs::path work = dir_ / ("work-" + std::to_string(counter_++));
    fs::create_directories(work);
    for (const auto& [path, content] : files) write_file(work / path, content);
    for (const auto& [path, target] : symlinks) {
      fs::create_directories((work / path).parent_path());
      fs::create_symlink(target, work / path);
    }
    for (const auto& [path, source] : copies) {
      fs::create_directories((work / path).parent_path());
      fs::copy_file(source, work / path);
    }
    run_ok({"git", "init", "-q", "-b", branch}, work, committer());
    run_ok({"git", "add", "-A"}, work, committer());
    run_ok({"git", "commit", "-q", "-m", "test content"}, work, committer());
    const fs::path bare = root() / (owner_name + ".git");
    fs::create_directories(bare.parent_path());
    run_ok({"git", "clone", "-q", "--bare", work.string(), bare.string()}, {}, committer());
    fs::remove_all(work);
  }

  /// Adds a commit to `branch` of the existing repository `owner/name.git`
  /// that writes `files` (path -> content) over what was there.
  void commit(const std::string& owner_name, const std::map<std::string, std::string>& files,
              const std::string& branch = "main") {
    const fs::path work = dir_ / ("work-" + std::to_string(counter_++));
    run_ok({"git", "clone", "-q", "-b", branch, (root() / (owner_name + ".git")).string(), work.string()}, {},
           committer());
    for (const auto& [path, content] : files) write_file(work / path, content);
    run_ok({"git", "add", "-A"}, work, committer());
    run_ok({"git", "commit", "-q", "-m", "a change"}, work, committer());
    run_ok({"git", "push", "-q", "origin", branch}, work, committer());
    fs::remove_all(work);
  }

 private:
  static std::map<std::string, std::string, std::less<>> committer() {
    return {{"GIT_AUTHOR_NAME", "t"},
            {"GIT_AUTHOR_EMAIL", "t@example.com"},
            {"GIT_COMMITTER_NAME", "t"},
            {"GIT_COMMITTER_EMAIL", "t@example.com"}};
  }

  fs::path dir_;
  std::string token_;
  int port_ = 0;
  int counter_ = 0;
  std::optional<BackgroundProcess> server_;
};

/// A real docker-registry (distribution 2.x) with htpasswd auth on a free port.
class Registry {
 public:
  Registry(const fs::path& dir, std::string user, std::string password)
      : dir_(dir), user_(std::move(user)), password_(std::move(password)) {
    fs::create_directories(dir_ / "registry-data");
    write_file(dir_ / "htpasswd", run_ok({"htpasswd", "-Bbn", user_, password_}));
    port_ = free_port();
    const fs::path config = dir_ / "registry.yml";
    std::ostringstream yaml;
    yaml << "version: 0.1\n"
         << "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
         << "storage:\n  filesystem:\n    rootdirectory: " << (dir_ / "registry-data").string() << "\n"
         << "  delete:\n    enabled: true\n"
         << "http:\n  addr: 127.0.0.1:" << port_ << "\n  secret: blacktree-test-only\n"
         << "auth:\n  htpasswd:\n    realm: blacktree-test\n    path: " << (dir_ / "htpasswd").string() << "\n";
    write_file(config, yaml.str());
    server_.emplace(std::vector<std::string>{"docker-registry", "serve", config.string()}, dir_ / "registry.out");
    if (!wait_until([&] { return port_accepts(port_); }, 30s)) {
      throw std::runtime_error("docker-registry did not start: " + read_file(dir_ / "registry.out"));
    }
    // An auth file for the test's own skopeo calls.
    write_file(auth_file(), "{\"auths\":{\"" + host() + "\":{\"auth\":\"" +
                                worker::base64_encode(user_ + ":" + password_) + "\"}}}");
  }

  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& user() const { return user_; }
  const std::string& password() const { return password_; }
  fs::path auth_file() const { return dir_ / "test-auth.json"; }

  /// skopeo inspect --raw=false of a reference (without the docker:// prefix).
  std::string inspect(const std::string& ref) const {
    return run_ok({"skopeo", "inspect", "--tls-verify=false", "--authfile", auth_file().string(), "docker://" + ref});
  }

  /// Copies the image to a local directory (manifest, config and layer blobs).
  void copy_to_dir(const std::string& ref, const fs::path& out) const {
    run_ok({"skopeo", "copy", "-q", "--src-tls-verify=false", "--src-authfile", auth_file().string(),
            "docker://" + ref, "dir:" + out.string()});
  }

 private:
  fs::path dir_;
  std::string user_;
  std::string password_;
  int port_ = 0;
  std::optional<BackgroundProcess> server_;
};

}  // namespace blacktree::test
