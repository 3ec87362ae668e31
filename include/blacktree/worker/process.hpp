// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
#pragma once

// Running one external command for a job: argv only (never a shell, so no
// user-supplied text is ever parsed as shell syntax), in a cgroup (or PID
// namespace) of its own so that cancellation, timeouts and its own exit
// end everything it started,
// with an environment and working directory chosen by the caller (secrets
// reach tools through the environment, never through argv).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace blacktree::worker {

class Redactor;

/// How run_process keeps everything a process starts inside its reach, so
/// that nothing outlives it (daemons that setsid and double-fork included).
enum class Containment {
  /// cgroup where this host allows it, else pid_namespace where the worker
  /// may create one (root), else process_group. See `automatic_containment()`.
  automatic,
  /// A cgroup v2 of its own: `cgroup.kill` ends every member at once, and
  /// `cgroup.events` says when none is left. Needs a writable cgroup2 mount
  /// and Linux >= 5.14.
  cgroup,
  /// A PID namespace of its own (`unshare --pid --fork --kill-child`): when
  /// the namespace's first process ends, the kernel kills the rest. Needs
  /// CAP_SYS_ADMIN.
  pid_namespace,
  /// Only its process group: what leaves the group (setsid) escapes. The
  /// last resort, for unprivileged hosts without cgroup v2.
  process_group,
};

/// What to run and how.
struct ProcessSpec {
  /// argv[0] is looked up in the PATH of `env` when it has no '/', else in the
  /// worker's own PATH. Must not be empty.
  std::vector<std::string> argv;
  /// The child's complete environment. The worker's own environment is NOT
  /// inherited (a secret of one job must not reach another job's tools, and
  /// the worker's own settings must not leak into builds); put PATH, HOME etc.
  /// here. See `minimal_environment()`.
  std::map<std::string, std::string, std::less<>> env;
  /// Working directory; empty: the worker's own.
  std::filesystem::path cwd;
  /// Written to the child's stdin, which is then closed (e.g. a credential
  /// helper's request). At most 64 KiB; empty: stdin is /dev/null.
  std::string input;
  /// 0: no limit. When it expires everything the process started is killed.
  std::chrono::milliseconds timeout{0};
  /// How long its processes get between SIGTERM and SIGKILL when they are
  /// stopped (cancel or timeout).
  std::chrono::milliseconds kill_grace{std::chrono::seconds(3)};
  Containment containment = Containment::automatic;
  /// When set, every line is redacted with it before `on_line` sees it, and
  /// an over-long line is cut only where no secret straddles the cut (the
  /// last `longest() - 1` bytes wait for the next piece). Must outlive the call.
  const Redactor* redactor = nullptr;
};

/// How a process ended.
struct ProcessOutcome {
  enum class End {
    exited,           ///< exit_code holds the status
    signalled,        ///< killed by `signal` (not by us)
    timed_out,        ///< we killed it: ProcessSpec::timeout expired
    cancelled,        ///< we killed it: the stop_token was requested
    failed_to_start,  ///< never ran: `error` says why (no such program, bad cwd)
  };
  End end = End::failed_to_start;
  int exit_code = -1;  ///< for End::exited; -1 when the status was lost
  int signal = 0;      ///< for End::signalled
  std::string error;   ///< for End::failed_to_start
  std::chrono::milliseconds elapsed{0};

  /// Exited with status 0.
  bool ok() const noexcept { return end == End::exited && exit_code == 0; }
  /// "exited with code 2", "killed by signal 9 (SIGKILL)", "timed out after 30s",
  /// "cancelled", "could not start: ...": for error messages.
  std::string describe() const;
};

/// Called once per line of output (stdout and stderr interleaved as written),
/// without the trailing newline, on the thread that called run_process. A
/// final unterminated line is delivered too. Over-long lines are split.
using LineFn = std::function<void(std::string_view line)>;

/// Runs `spec` to completion, streaming its output to `on_line` (may be empty).
/// Blocks. When `stop` is requested or the timeout expires, everything the
/// process started gets SIGTERM, then SIGKILL after `kill_grace`; when it
/// exits by itself, whatever it left running is killed. Either way
/// run_process returns only once the child has been reaped and (under a
/// cgroup or PID namespace, see Containment) nothing it started is left,
/// daemons that left its process group included: nothing a job starts
/// outlives it. No other process on the host is looked at.
/// The embedding program must not set SIGCHLD to SIG_IGN (the exit status
/// would be lost; run_process then reports exit code -1, a failure).
/// Throws only what `on_line` throws (after killing and reaping the child).
ProcessOutcome run_process(const ProcessSpec& spec, const LineFn& on_line, std::stop_token stop = {});

/// What Containment::automatic means on this host now: cgroup, pid_namespace
/// or process_group (for the worker's start-up log).
Containment automatic_containment();
/// "automatic", "cgroup", "pid_namespace", "process_group".
std::string_view to_string(Containment containment) noexcept;

/// Ends what a worker killed without its chance to clean up (SIGKILL, a
/// crash) left running: every job cgroup beside this process's own whose
/// worker process is gone is killed (`cgroup.kill`) and removed. Job cgroups
/// of live workers sharing the cgroup are left alone. Returns how many were
/// ended; 0 without cgroup containment. Call once at start, before any job.
std::size_t end_orphaned_job_cgroups();

/// Processes that tools run by run_process left running when they exited by
/// themselves, and that were killed for it, since the program started.
/// Counted where a job cgroup holds them (Containment::cgroup); elsewhere
/// they are killed all the same, uncounted.
std::uint64_t leftover_processes_killed() noexcept;

/// PATH, HOME, LANG=C.UTF-8 (and TMPDIR when `home` is given): a starting
/// environment for tools. PATH is the worker's own PATH (or a standard one).
/// HOME is `home` when given, else the worker's HOME.
std::map<std::string, std::string, std::less<>> minimal_environment(const std::filesystem::path& home = {});

}  // namespace blacktree::worker
