// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/process.hpp>

#include "common/waker.hpp"
#include "util.hpp"

#include <blacktree/core/result.hpp>
#include <blacktree/worker/error.hpp>
#include <blacktree/worker/log.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace blacktree::worker {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// A line longer than this is delivered in pieces: a tool printing megabytes
// without a newline must not make us buffer without bound.
constexpr std::size_t max_line_bytes = 16 * 1024;
// After the child exited we still read what its output pipe holds, but a
// process outside its group holding the pipe open must not block us forever.
constexpr milliseconds drain_limit{2000};
// At the limit, what the pipe holds then is still read, up to this (a pipe
// holds 64 KiB by default, at most 1 MiB unless raised).
constexpr std::size_t final_drain_bytes = 1 << 20;
// How long we wait for killed descendants to be gone before returning.
constexpr milliseconds reap_limit{3000};

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string errno_text(int err) { return std::system_category().message(err); }

int pidfd_open(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  errno = ENOSYS;
  return -1;
#endif
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev != nullptr ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", sig);
}

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// argv[0] resolved against PATH; the child's PATH wins because that is the
// environment the caller chose for the tool.
core::Result<std::string> resolve_program(const std::string& name, const ProcessSpec& spec) {
  if (name.find('/') != std::string::npos) return name;
  std::string path;
  if (auto it = spec.env.find("PATH"); it != spec.env.end()) {
    path = it->second;
  } else if (const char* own = std::getenv("PATH"); own != nullptr) {
    path = own;
  } else {
    path = "/usr/local/bin:/usr/bin:/bin";
  }
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (is_executable_file(candidate)) return candidate;
    start = end + 1;
  }
  return core::Error{errc::tool_unavailable, fmt::format("'{}' not found in PATH", name)};
}

// --- containment -------------------------------------------------------------

// Where this process's own cgroup v2 directory is ("" when there is no
// cgroup2 mount, or we may not create cgroups under it): read once.
std::string find_own_cgroup_dir() {
  std::ifstream cgroups("/proc/self/cgroup");
  std::string own;
  for (std::string line; std::getline(cgroups, line);) {
    if (line.rfind("0::", 0) == 0) own = line.substr(3);
  }
  if (own.empty()) return {};
  std::ifstream mounts("/proc/self/mountinfo");
  for (std::string line; std::getline(mounts, line);) {
    // "id parent major:minor root mount-point options ... - fstype source super-options"
    const auto dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
    std::istringstream fields(line.substr(0, dash));
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    if (root != "/" && own.rfind(root, 0) != 0) continue;  // our cgroup is not below this mount's root
    const std::string relative = root == "/" ? own : own.substr(root.size());
    std::string dir = mount_point + relative;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (::access((dir + "/cgroup.procs").c_str(), W_OK) == 0 && ::access(dir.c_str(), W_OK) == 0) return dir;
  }
  return {};
}

const std::string& own_cgroup_dir() {
  static const std::string dir = find_own_cgroup_dir();
  return dir;
}

// Set once a cgroup could not be used (no cgroup.kill, a move refused), so
// later processes go straight to the next containment.
std::atomic<bool> cgroups_unusable{false};
std::atomic<unsigned long> cgroup_counter{0};

bool can_unshare_pid() { return ::geteuid() == 0; }

// A cgroup v2 of its own for one process and everything it starts: killing
// it needs no list of pids (cgroup.kill), and populated 0 in cgroup.events
// says when the last member is gone. Nothing on the host is walked.
class JobCgroup {
 public:
  static std::optional<JobCgroup> create() {
    if (cgroups_unusable.load() || own_cgroup_dir().empty()) return std::nullopt;
    std::string dir = fmt::format("{}/blacktree-{}-{}", own_cgroup_dir(), ::getpid(), ++cgroup_counter);
    if (::mkdir(dir.c_str(), 0755) != 0) {
      cgroups_unusable = true;
      return std::nullopt;
    }
    JobCgroup group(std::move(dir));
    group.procs_ = Fd(::open((group.dir_ + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    group.kill_ = Fd(::open((group.dir_ + "/cgroup.kill").c_str(), O_WRONLY | O_CLOEXEC));
    group.events_ = Fd(::open((group.dir_ + "/cgroup.events").c_str(), O_RDONLY | O_CLOEXEC));
    if (!group.procs_.valid() || !group.kill_.valid() || !group.events_.valid()) {
      cgroups_unusable = true;  // Linux < 5.14 has no cgroup.kill
      return std::nullopt;
    }
    return group;
  }

  JobCgroup(JobCgroup&& other) noexcept
      : dir_(std::exchange(other.dir_, {})), procs_(std::move(other.procs_)), kill_(std::move(other.kill_)),
        events_(std::move(other.events_)) {}
  JobCgroup& operator=(JobCgroup&&) = delete;
  JobCgroup(const JobCgroup&) = delete;
  JobCgroup& operator=(const JobCgroup&) = delete;
  ~JobCgroup() {
    if (dir_.empty()) return;
    kill_all();
    wait_empty(Clock::now() + reap_limit);
    procs_.reset();
    kill_.reset();
    events_.reset();
    ::rmdir(dir_.c_str());
  }

  int procs_fd() const noexcept { return procs_.get(); }

  void kill_all() const noexcept {
    if (kill_.valid()) (void)!::write(kill_.get(), "1", 1);
  }

  // The processes in this one cgroup now.
  std::vector<pid_t> members() const {
    std::ifstream in(dir_ + "/cgroup.procs");
    std::vector<pid_t> pids;
    for (long pid = 0; in >> pid;) {
      if (pid > 0) pids.push_back(static_cast<pid_t>(pid));
    }
    return pids;
  }

  // For the graceful signal only (SIGTERM).
  void signal_members(int sig) const {
    for (const pid_t pid : members()) ::kill(pid, sig);
  }

  bool empty() const {
    std::ifstream in(dir_ + "/cgroup.events");
    for (std::string key, value; in >> key >> value;) {
      if (key == "populated") return value == "0";
    }
    return true;
  }

  // cgroup.events raises POLLPRI when "populated" changes.
  void wait_empty(Clock::time_point deadline) const {
    while (!empty()) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return;
      pollfd p{events_.get(), POLLPRI, 0};
      ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100)));
    }
  }

 private:
  explicit JobCgroup(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  Fd procs_;
  Fd kill_;
  Fd events_;
};

// The child's output, cut into lines.
class LineSplitter {
 public:
  LineSplitter(const LineFn& on_line, const Redactor* redactor) : on_line_(on_line), redactor_(redactor) {}

  void feed(const char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const char c = data[i];
      if (c == '\n') {
        flush();
      } else {
        partial_.push_back(c);
        if (partial_.size() >= max_line_bytes) cut();
      }
    }
  }
  void finish() {
    if (!partial_.empty()) flush();
  }

 private:
  void flush() {
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    if (redactor_ != nullptr) partial_ = redactor_->apply(partial_);
    if (on_line_) on_line_(partial_);
    partial_.clear();
  }
  // An over-long line goes out in pieces. A secret may straddle the cut, so
  // the piece is redacted whole and its last longest()-1 bytes (which may
  // hold the start of a secret) stay for the next piece.
  void cut() {
    if (redactor_ == nullptr || redactor_->empty()) {
      if (on_line_) on_line_(partial_);
      partial_.clear();
      return;
    }
    std::string redacted = redactor_->apply(partial_);
    const std::size_t keep = std::min(redactor_->longest() - 1, redacted.size());
    partial_ = redacted.substr(redacted.size() - keep);
    redacted.resize(redacted.size() - keep);
    if (on_line_ && !redacted.empty()) on_line_(redacted);
  }
  const LineFn& on_line_;
  const Redactor* redactor_;
  std::string partial_;
};

// Processes a tool left running when it exited, killed (see
// leftover_processes_killed).
std::atomic<std::uint64_t> leftovers_killed{0};

// The spawned child and everything needed to stop it and all it started.
class Child {
 public:
  Child(pid_t pid, Fd pidfd, std::optional<JobCgroup> cgroup)
      : pid_(pid), pidfd_(std::move(pidfd)), cgroup_(std::move(cgroup)) {}
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  // Reached unreaped only when a callback threw: the process must not
  // outlive the call that started it.
  ~Child() {
    if (!reaped_) {
      signal_tree(SIGKILL);
      reap();
      wait_descendants_gone(Clock::now() + reap_limit);
    }
  }

  pid_t pid() const noexcept { return pid_; }
  int pidfd() const noexcept { return pidfd_.get(); }

  // True once the child has exited (it is then a zombie until reap()).
  bool exited() const {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return true;
    return info.si_pid == pid_;
  }

  // Signals everything the child started. With a cgroup that is every
  // member, wherever it moved in the process tree; under a PID namespace
  // killing the child (`unshare --kill-child`) ends the namespace; else the
  // process group. While the child is not reaped its pid (the group id)
  // cannot be reused, so kill(-pid) is safe.
  void signal_tree(int sig) {
    if (cgroup_) {
      if (sig == SIGKILL) {
        cgroup_->kill_all();
      } else {
        cgroup_->signal_members(sig);
      }
    }
    if (!reaped_) {
      ::kill(-pid_, sig);
      ::kill(pid_, sig);
    }
  }

  // Reaps the child; returns the wait status, or nullopt when it was lost
  // (the embedding program ignores SIGCHLD, so the kernel reaped the child).
  std::optional<int> reap() {
    int status = 0;
    reaped_ = true;
    while (::waitpid(pid_, &status, 0) < 0) {
      if (errno != EINTR) return std::nullopt;
    }
    return status;
  }

  // What the child left running when it exited, about to be killed: counted
  // in a cgroup only (elsewhere it would take a walk of every process).
  std::size_t leftovers() const { return cgroup_ && !reaped_ ? cgroup_->members().size() : 0; }

  // Waits (bounded) until nothing the child started is left, so that the
  // caller may rely on "nothing of it is left" once run_process returns. A
  // PID namespace is empty once its first process was reaped (the kernel
  // kills and waits for the rest before that process can exit).
  void wait_descendants_gone(Clock::time_point deadline) {
    if (cgroup_) cgroup_->wait_empty(deadline);
  }

 private:
  pid_t pid_;
  Fd pidfd_;
  std::optional<JobCgroup> cgroup_;
  bool reaped_ = false;
};

// What the forked child reports through its error pipe when it cannot exec.
struct SpawnFailure {
  int stage;  // 0: joining the cgroup, 1: chdir, 2: exec
  int error;
};

// Everything the forked child needs, prepared before fork: after it only
// async-signal-safe calls are allowed (the worker has other threads).
struct SpawnPlan {
  const char* program = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cwd = nullptr;
  int stdin_fd = -1;
  int output_fd = -1;
  int cgroup_procs_fd = -1;
};

// fork + exec rather than posix_spawn: the child must enter its cgroup
// before it runs a single instruction of the program, or a fast fork in it
// could leave a grandchild outside.
pid_t spawn(const SpawnPlan& plan, SpawnFailure& failure) {
  int err_fds[2];
  if (::pipe2(err_fds, O_CLOEXEC) != 0) {
    failure = {2, errno};
    return -1;
  }
  Fd err_read(err_fds[0]);
  Fd err_write(err_fds[1]);
  const pid_t pid = ::fork();
  if (pid < 0) {
    failure = {2, errno};
    return -1;
  }
  if (pid == 0) {
    const auto fail = [&](int stage) {
      const SpawnFailure f{stage, errno};
      (void)!::write(err_write.get(), &f, sizeof f);
      ::_exit(127);
    };
    if (plan.cgroup_procs_fd >= 0 && ::write(plan.cgroup_procs_fd, "0", 1) != 1) fail(0);
    // Own process group, default dispositions and an empty mask: the
    // worker's threads may block or ignore signals (SIGPIPE, SIGTERM) that a
    // tool must see normally.
    ::setpgid(0, 0);
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    }
    sigset_t empty_mask;
    ::sigemptyset(&empty_mask);
    ::sigprocmask(SIG_SETMASK, &empty_mask, nullptr);
    ::dup2(plan.stdin_fd, STDIN_FILENO);
    ::dup2(plan.output_fd, STDOUT_FILENO);
    ::dup2(plan.output_fd, STDERR_FILENO);
    if (plan.cwd != nullptr && ::chdir(plan.cwd) != 0) fail(1);
    // Descriptors another thread opened without O_CLOEXEC must not leak into a job.
#ifdef SYS_close_range
    ::syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */);
#endif
    ::execve(plan.program, plan.argv, plan.envp);
    fail(2);
  }
  err_write.reset();
  ssize_t n;
  while ((n = ::read(err_read.get(), &failure, sizeof failure)) < 0 && errno == EINTR) {
  }
  if (n == static_cast<ssize_t>(sizeof failure)) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return -1;
  }
  return pid;  // exec succeeded: the pipe closed without a word
}

}  // namespace

std::string ProcessOutcome::describe() const {
  switch (end) {
    case End::exited:
      return fmt::format("exited with code {}", exit_code);
    case End::signalled:
      return fmt::format("killed by {}", signal_name(signal));
    case End::timed_out:
      return fmt::format("timed out after {} and was killed", detail::format_duration(elapsed));
    case End::cancelled:
      return "cancelled and killed";
    case End::failed_to_start:
      return fmt::format("could not start: {}", error);
  }
  return "unknown outcome";
}

Containment automatic_containment() {
  if (!cgroups_unusable.load() && !own_cgroup_dir().empty()) return Containment::cgroup;
  return can_unshare_pid() ? Containment::pid_namespace : Containment::process_group;
}

std::size_t end_orphaned_job_cgroups() {
  const std::string& parent = own_cgroup_dir();
  if (parent.empty()) return 0;
  std::size_t ended = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(parent, ec)) {
    // "blacktree-<pid>-<n>": made by the worker with that pid (JobCgroup::create).
    const std::string name = entry.path().filename().string();
    unsigned long pid = 0, n = 0;
    char tail = 0;
    if (std::sscanf(name.c_str(), "blacktree-%lu-%lu%c", &pid, &n, &tail) != 2 || pid == 0) continue;
    // A live worker's jobs are its own business (several workers may share a
    // cgroup); only a group whose worker is gone is ended.
    if (static_cast<pid_t>(pid) == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM) continue;
    const std::string dir = entry.path().string();
    (void)!::write(Fd(::open((dir + "/cgroup.kill").c_str(), O_WRONLY | O_CLOEXEC)).get(), "1", 1);
    const auto deadline = Clock::now() + reap_limit;
    // rmdir succeeds once the last member is gone (EBUSY until then).
    while (::rmdir(dir.c_str()) != 0 && errno == EBUSY && Clock::now() < deadline) {
      ::poll(nullptr, 0, 20);
    }
    ++ended;
  }
  return ended;
}

std::string_view to_string(Containment containment) noexcept {
  switch (containment) {
    case Containment::automatic: return "automatic";
    case Containment::cgroup: return "cgroup";
    case Containment::pid_namespace: return "pid_namespace";
    case Containment::process_group: return "process_group";
  }
  return "unknown";
}

std::map<std::string, std::string, std::less<>> minimal_environment(const std::filesystem::path& home) {
  std::map<std::string, std::string, std::less<>> env;
  const char* path = std::getenv("PATH");
  env["PATH"] = path != nullptr ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  if (!home.empty()) {
    env["HOME"] = home.string();
    env["TMPDIR"] = home.string();
  } else if (const char* own = std::getenv("HOME"); own != nullptr) {
    env["HOME"] = own;
  }
  env["LANG"] = "C.UTF-8";
  return env;
}

ProcessOutcome run_process(const ProcessSpec& spec, const LineFn& on_line, std::stop_token stop) {
  ProcessOutcome outcome;
  const auto started = Clock::now();
  const auto finish = [&](ProcessOutcome::End end) {
    outcome.end = end;
    outcome.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - started);
    return outcome;
  };
  if (spec.argv.empty()) {
    outcome.error = "empty argv";
    return finish(ProcessOutcome::End::failed_to_start);
  }
  if (stop.stop_requested()) return finish(ProcessOutcome::End::cancelled);

  const auto program = resolve_program(spec.argv.front(), spec);
  if (!program) {
    outcome.error = program.error().message();
    return finish(ProcessOutcome::End::failed_to_start);
  }
  if (!spec.cwd.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_directory(spec.cwd, ec)) {
      outcome.error = fmt::format("working directory {} does not exist", spec.cwd.string());
      return finish(ProcessOutcome::End::failed_to_start);
    }
  }

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    outcome.error = fmt::format("pipe: {}", errno_text(errno));
    return finish(ProcessOutcome::End::failed_to_start);
  }
  Fd read_end(pipe_fds[0]);
  Fd write_end(pipe_fds[1]);
  blacktree::detail::Waker wake;
  if (!wake.valid()) {
    outcome.error = fmt::format("eventfd: {}", errno_text(errno));
    return finish(ProcessOutcome::End::failed_to_start);
  }

  // Small input goes into a pipe before the spawn, so nothing has to feed the
  // child while we also read its output.
  Fd input_read;
  if (!spec.input.empty()) {
    int in_fds[2];
    if (::pipe2(in_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
      outcome.error = fmt::format("pipe: {}", errno_text(errno));
      return finish(ProcessOutcome::End::failed_to_start);
    }
    input_read = Fd(in_fds[0]);
    Fd input_write(in_fds[1]);
    const ssize_t n = ::write(input_write.get(), spec.input.data(), spec.input.size());
    if (n < 0 || static_cast<std::size_t>(n) != spec.input.size()) {
      outcome.error = fmt::format("input of {} bytes does not fit the child's stdin pipe", spec.input.size());
      return finish(ProcessOutcome::End::failed_to_start);
    }
    // The read end must block for the child.
    ::fcntl(input_read.get(), F_SETFL, ::fcntl(input_read.get(), F_GETFL) & ~O_NONBLOCK);
  }

  std::vector<std::string> env_strings;
  env_strings.reserve(spec.env.size());
  for (const auto& [key, value] : spec.env) env_strings.push_back(key + "=" + value);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);

  Containment containment = spec.containment == Containment::automatic ? automatic_containment() : spec.containment;
  std::optional<JobCgroup> cgroup = containment == Containment::cgroup ? JobCgroup::create() : std::nullopt;
  if (containment == Containment::cgroup && !cgroup) {
    containment = can_unshare_pid() ? Containment::pid_namespace : Containment::process_group;
  }
  std::string program_path = *program;
  std::vector<std::string> argv_copy = spec.argv;
  if (containment == Containment::pid_namespace) {
    // The program becomes the first process of a PID namespace of its own:
    // when it ends, or `unshare` is killed (--kill-child), the kernel ends
    // everything else in the namespace, daemons included.
    ProcessSpec lookup;
    lookup.env = spec.env;
    const auto unshare = resolve_program("unshare", lookup);
    if (!unshare) {
      outcome.error = "containment pid_namespace needs util-linux's 'unshare' in PATH";
      return finish(ProcessOutcome::End::failed_to_start);
    }
    argv_copy.insert(argv_copy.begin(), {"unshare", "--pid", "--fork", "--kill-child", "--", *program});
    argv_copy.erase(argv_copy.begin() + 6);  // the original argv[0]: *program replaces it
    program_path = *unshare;
  }
  std::vector<char*> argv;
  for (auto& s : argv_copy) argv.push_back(s.data());
  argv.push_back(nullptr);

  Fd dev_null;
  if (!input_read.valid()) dev_null = Fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  SpawnPlan plan;
  plan.program = program_path.c_str();
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  plan.stdin_fd = input_read.valid() ? input_read.get() : dev_null.get();
  plan.output_fd = write_end.get();
  plan.cgroup_procs_fd = cgroup ? cgroup->procs_fd() : -1;
  SpawnFailure failure{};
  pid_t pid = spawn(plan, failure);
  if (pid < 0 && failure.stage == 0) {
    // The cgroup refused the move (a parent with controllers enabled for its
    // children, say): contain it the next best way, now and from now on.
    cgroups_unusable = true;
    cgroup.reset();
    plan.cgroup_procs_fd = -1;
    pid = spawn(plan, failure);
  }
  input_read.reset();
  dev_null.reset();
  write_end.reset();  // only the child holds it now: EOF once it and its children are gone
  if (pid < 0) {
    outcome.error = failure.stage == 1
                        ? fmt::format("cannot enter the working directory {}: {}", spec.cwd.string(),
                                      errno_text(failure.error))
                        : fmt::format("{}: {}", *program, errno_text(failure.error));
    return finish(ProcessOutcome::End::failed_to_start);
  }

  Child child(pid, Fd(pidfd_open(pid)), std::move(cgroup));
  std::stop_callback on_stop(stop, [&wake] { wake.notify(); });

  LineSplitter lines(on_line, spec.redactor);
  // time_point::max() stands for "not set" (std::optional<time_point> trips
  // GCC 12's -Wmaybe-uninitialized).
  constexpr auto never = Clock::time_point::max();
  const Clock::time_point deadline = spec.timeout.count() > 0 ? started + spec.timeout : never;
  std::optional<ProcessOutcome::End> killed_because;
  Clock::time_point kill_at = never;  // SIGKILL time once SIGTERM was sent
  bool pipe_open = true;
  bool child_exited = false;
  std::optional<int> wait_status;
  Clock::time_point drain_until = never;

  const auto start_stopping = [&](ProcessOutcome::End why) {
    if (killed_because) return;
    killed_because = why;
    child.signal_tree(SIGTERM);
    kill_at = Clock::now() + spec.kill_grace;
  };

  char buffer[8192];
  while (pipe_open || !child_exited) {
    const auto now = Clock::now();
    if (!child_exited) {
      if (!killed_because && stop.stop_requested()) start_stopping(ProcessOutcome::End::cancelled);
      if (!killed_because && now >= deadline) start_stopping(ProcessOutcome::End::timed_out);
      if (now >= kill_at) {
        child.signal_tree(SIGKILL);
        kill_at = never;
      }
      if (child.exited()) {
        // Whatever it left running in its group (or, if we were stopping it,
        // anywhere below it) goes too; then reap.
        if (!killed_because) {
          if (const auto left = child.leftovers()) leftovers_killed.fetch_add(left, std::memory_order_relaxed);
        }
        child.signal_tree(SIGKILL);
        wait_status = child.reap();
        child_exited = true;
        drain_until = Clock::now() + drain_limit;
        continue;
      }
    } else if (pipe_open && now >= drain_until) {
      // Something outside the group still holds the pipe: take what the pipe
      // holds now (what the job wrote before it exited, when the line
      // callback was slow to take it: the limit is not for that), then stop.
      ::fcntl(read_end.get(), F_SETFL, ::fcntl(read_end.get(), F_GETFL) | O_NONBLOCK);
      std::size_t taken = 0;
      for (ssize_t n = 0; taken < final_drain_bytes && (n = ::read(read_end.get(), buffer, sizeof buffer)) > 0;
           taken += static_cast<std::size_t>(n))
        lines.feed(buffer, static_cast<std::size_t>(n));
      break;
    }

    // Sleep until output, exit, stop request, or the next deadline.
    auto wake_at = never;
    if (!child_exited) {
      if (!killed_because) wake_at = std::min(wake_at, deadline);
      wake_at = std::min(wake_at, kill_at);
      if (child.pidfd() < 0) wake_at = std::min(wake_at, now + milliseconds(50));  // no pidfd: poll
    } else {
      wake_at = std::min(wake_at, drain_until);
    }
    int timeout_ms = -1;
    if (wake_at != never) {
      const auto left = std::chrono::duration_cast<milliseconds>(wake_at - now).count() + 1;
      timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, 60'000));
    }
    pollfd fds[3];
    nfds_t nfds = 0;
    const int pipe_idx = pipe_open ? static_cast<int>(nfds) : -1;
    if (pipe_open) fds[nfds++] = {read_end.get(), POLLIN, 0};
    if (!child_exited && child.pidfd() >= 0) fds[nfds++] = {child.pidfd(), POLLIN, 0};
    if (!child_exited && !killed_because) fds[nfds++] = {wake.fd(), POLLIN, 0};
    const int ready = ::poll(fds, nfds, timeout_ms);
    if (ready < 0 && errno != EINTR) break;
    if (pipe_idx >= 0 && ready > 0 && (fds[pipe_idx].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      const ssize_t n = ::read(read_end.get(), buffer, sizeof buffer);
      if (n > 0) {
        lines.feed(buffer, static_cast<std::size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        pipe_open = false;
      }
    }
  }
  lines.finish();
  if (!child_exited) {  // only reached if poll itself failed: never leave a process behind
    child.signal_tree(SIGKILL);
    wait_status = child.reap();
  }
  child.wait_descendants_gone(Clock::now() + reap_limit);

  if (killed_because) return finish(*killed_because);
  if (!wait_status) {
    // Reporting success we cannot know would be worse than failing.
    outcome.exit_code = -1;
    return finish(ProcessOutcome::End::exited);
  }
  if (WIFEXITED(*wait_status)) {
    outcome.exit_code = WEXITSTATUS(*wait_status);
    return finish(ProcessOutcome::End::exited);
  }
  if (WIFSIGNALED(*wait_status)) {
    outcome.signal = WTERMSIG(*wait_status);
    return finish(ProcessOutcome::End::signalled);
  }
  outcome.exit_code = -1;
  return finish(ProcessOutcome::End::exited);
}

std::uint64_t leftover_processes_killed() noexcept { return leftovers_killed.load(std::memory_order_relaxed); }

}  // namespace blacktree::worker
