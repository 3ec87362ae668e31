// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#include <blacktree/worker/process.hpp>

#include "common/waker.hpp"
#include "util.hpp"

#include <blacktree/core/result.hpp>
#include <blacktree/worker/error.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <system_error>
#include <unordered_map>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
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

int pidfd_send_signal(int pidfd, int sig) noexcept {
#ifdef SYS_pidfd_send_signal
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
#else
  (void)pidfd;
  (void)sig;
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

// Every live descendant of `root` (not `root` itself) and every member of its
// process group `root` (orphans reparented away from it included), from
// /proc. Each is held as a pidfd so that signalling or awaiting it later
// cannot hit a recycled pid.
std::vector<Fd> descendants_of(pid_t root) {
  std::unordered_map<pid_t, std::vector<pid_t>> children;
  std::vector<pid_t> group;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      continue;
    }
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    // "pid (comm) state ppid ...": comm may hold spaces and ')', so parse
    // from the last ')'.
    const auto close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    const char* p = stat.c_str() + close + 2;  // at state
    ++p;                                       // past the state letter
    char* end = nullptr;
    const long ppid = std::strtol(p, &end, 10);
    const long pgrp = std::strtol(end, nullptr, 10);
    const auto pid = static_cast<pid_t>(std::stol(name));
    children[static_cast<pid_t>(ppid)].push_back(pid);
    if (pgrp == root && pid != root) group.push_back(pid);
  }
  std::vector<pid_t> found = group;
  std::vector<pid_t> todo{root};
  while (!todo.empty()) {
    const pid_t parent = todo.back();
    todo.pop_back();
    auto it = children.find(parent);
    if (it == children.end()) continue;
    for (pid_t child : it->second) {
      if (std::find(found.begin(), found.end(), child) == found.end()) found.push_back(child);
      todo.push_back(child);
    }
  }
  std::vector<Fd> out;
  for (pid_t pid : found) {
    if (int fd = pidfd_open(pid); fd >= 0) out.emplace_back(fd);
  }
  return out;
}

// The child's output, cut into lines.
class LineSplitter {
 public:
  explicit LineSplitter(const LineFn& on_line) : on_line_(on_line) {}

  void feed(const char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      const char c = data[i];
      if (c == '\n') {
        flush();
      } else {
        partial_.push_back(c);
        if (partial_.size() >= max_line_bytes) flush();
      }
    }
  }
  void finish() {
    if (!partial_.empty()) flush();
  }

 private:
  void flush() {
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    if (on_line_) on_line_(partial_);
    partial_.clear();
  }
  const LineFn& on_line_;
  std::string partial_;
};

// The spawned child and everything needed to stop it.
class Child {
 public:
  Child(pid_t pid, Fd pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
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

  // Signals the process group and every known descendant. While the child is
  // not reaped its pid (the group id) cannot be reused, so kill(-pid) is safe.
  void signal_tree(int sig) {
    if (!reaped_) {
      for (auto& fd : descendants_of(pid_)) known_.push_back(std::move(fd));
    }
    for (const auto& fd : known_) pidfd_send_signal(fd.get(), sig);
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

  // Waits (bounded) until every descendant we signalled is gone, so that the
  // caller may rely on "nothing of it is left" once run_process returns.
  void wait_descendants_gone(Clock::time_point deadline) {
    for (const auto& fd : known_) {
      for (;;) {
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) return;
        pollfd p{fd.get(), POLLIN, 0};
        const int r = ::poll(&p, 1, static_cast<int>(left.count()));
        if (r >= 0 || errno != EINTR) break;
      }
    }
  }

 private:
  pid_t pid_;
  Fd pidfd_;
  std::vector<Fd> known_;
  bool reaped_ = false;
};

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
  std::vector<std::string> argv_copy = spec.argv;
  std::vector<char*> argv;
  for (auto& s : argv_copy) argv.push_back(s.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawnattr_init(&attr);
  if (input_read.valid()) {
    ::posix_spawn_file_actions_adddup2(&actions, input_read.get(), STDIN_FILENO);
  } else {
    ::posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  }
  ::posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
  ::posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDERR_FILENO);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // Descriptors another thread opened without O_CLOEXEC must not leak into a job.
  ::posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
  if (!spec.cwd.empty()) ::posix_spawn_file_actions_addchdir_np(&actions, spec.cwd.c_str());
  // Own process group (so one kill reaches everything it forks), an empty
  // signal mask and default dispositions: the worker's threads may block or
  // ignore signals (SIGPIPE, SIGTERM) that a tool must see normally.
  sigset_t empty_mask;
  sigset_t defaults;
  ::sigemptyset(&empty_mask);
  ::sigfillset(&defaults);
  ::sigdelset(&defaults, SIGKILL);
  ::sigdelset(&defaults, SIGSTOP);
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  ::posix_spawnattr_setpgroup(&attr, 0);
  ::posix_spawnattr_setsigmask(&attr, &empty_mask);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);

  pid_t pid = -1;
  const int spawn_error = ::posix_spawn(&pid, program->c_str(), &actions, &attr, argv.data(), envp.data());
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  input_read.reset();
  write_end.reset();  // only the child holds it now: EOF once it and its children are gone
  if (spawn_error != 0) {
    outcome.error = fmt::format("{}: {}", *program, errno_text(spawn_error));
    return finish(ProcessOutcome::End::failed_to_start);
  }

  Child child(pid, Fd(pidfd_open(pid)));
  std::stop_callback on_stop(stop, [&wake] { wake.notify(); });

  LineSplitter lines(on_line);
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
        child.signal_tree(SIGKILL);
        wait_status = child.reap();
        child_exited = true;
        drain_until = Clock::now() + drain_limit;
        continue;
      }
    } else if (pipe_open && now >= drain_until) {
      break;  // something outside the group still holds the pipe: stop reading
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

}  // namespace blacktree::worker
