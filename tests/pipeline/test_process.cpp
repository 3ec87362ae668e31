// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// run_process and ArgvRunner against real processes (/bin/sh, sleep).

#include <blacktree/worker/argv_runner.hpp>
#include <blacktree/worker/build_spec.hpp>
#include <blacktree/worker/log.hpp>
#include <blacktree/worker/process.hpp>

#include <catch2/catch.hpp>

#include "pipeline_support.hpp"

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace bw = blacktree::worker;
using namespace std::chrono_literals;
using blacktree::test::process_gone;

namespace {

struct Collected {
  std::vector<std::string> lines;
  bw::LineFn fn() {
    return [this](std::string_view l) { lines.emplace_back(l); };
  }
};

bw::ProcessSpec sh(std::string script) {
  bw::ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", std::move(script)};
  spec.env = bw::minimal_environment();
  return spec;
}

}  // namespace

TEST_CASE("run_process streams stdout and stderr lines and reports the exit code", "[process]") {
  Collected out;
  auto outcome = bw::run_process(sh("echo one; echo two >&2; printf 'three'; exit 3"), out.fn());
  CHECK(outcome.end == bw::ProcessOutcome::End::exited);
  CHECK(outcome.exit_code == 3);
  CHECK_FALSE(outcome.ok());
  CHECK(outcome.describe() == "exited with code 3");
  CHECK(out.lines == std::vector<std::string>{"one", "two", "three"});
}

// The drain limit after a process exits is for a pipe some process outside
// the group keeps open; output the job wrote before it exited is already in
// the pipe and must all arrive, even when the line callback (the worker's
// progress stream) is slow. A slow consumer is the fault here: the callback
// blocks longer than the drain limit (2 s) after the exit was seen.
TEST_CASE("run_process delivers everything a process wrote before it exited, however slow the line callback",
          "[process]") {
  std::vector<std::string> lines;
  auto slow = [&](std::string_view line) {
    // line-0: the shell exits meanwhile, so the exit is seen before the
    // next read. line-1000 starts past the first 8 KiB read and ends before
    // the last one: reading stalls there, with more in the pipe.
    if (line == "line-0") std::this_thread::sleep_for(300ms);
    if (line == "line-1000") std::this_thread::sleep_for(2500ms);
    lines.emplace_back(line);
  };
  // 2,000 lines, 18,890 bytes: all in the pipe when the shell exits.
  auto outcome = bw::run_process(sh("i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"), slow);
  CHECK(outcome.ok());
  REQUIRE(lines.size() == 2000);
  CHECK(lines.front() == "line-0");
  CHECK(lines.back() == "line-1999");
}

TEST_CASE("run_process uses exactly the given environment and working directory", "[process]") {
  setenv("BLACKTREE_TEST_LEAK", "must-not-be-seen", 1);
  Collected out;
  auto spec = sh("echo \"cwd=$(pwd) var=$MY_VAR leak=${BLACKTREE_TEST_LEAK:-none}\"");
  spec.env["MY_VAR"] = "hello world";
  spec.cwd = "/tmp";
  auto outcome = bw::run_process(spec, out.fn());
  unsetenv("BLACKTREE_TEST_LEAK");
  REQUIRE(outcome.ok());
  CHECK(out.lines == std::vector<std::string>{"cwd=/tmp var=hello world leak=none"});
}

TEST_CASE("run_process passes argv without a shell", "[process]") {
  Collected out;
  bw::ProcessSpec spec;
  spec.argv = {"printf", "%s\n", "$(touch /tmp/blacktree-injected); `id` ; | &"};
  spec.env = bw::minimal_environment();
  auto outcome = bw::run_process(spec, out.fn());
  REQUIRE(outcome.ok());
  CHECK(out.lines == std::vector<std::string>{"$(touch /tmp/blacktree-injected); `id` ; | &"});
}

TEST_CASE("run_process reports a program that cannot start", "[process]") {
  bw::ProcessSpec spec;
  spec.argv = {"blacktree-no-such-program"};
  spec.env = bw::minimal_environment();
  auto outcome = bw::run_process(spec, {});
  CHECK(outcome.end == bw::ProcessOutcome::End::failed_to_start);
  CHECK_THAT(outcome.describe(), Catch::Contains("blacktree-no-such-program") && Catch::Contains("not found"));

  spec.argv = {"/bin/true"};
  spec.cwd = "/nonexistent/dir";
  outcome = bw::run_process(spec, {});
  CHECK(outcome.end == bw::ProcessOutcome::End::failed_to_start);
  CHECK_THAT(outcome.error, Catch::Contains("/nonexistent/dir"));
}

TEST_CASE("run_process reports death by a signal", "[process]") {
  auto outcome = bw::run_process(sh("kill -SEGV $$"), {});
  CHECK(outcome.end == bw::ProcessOutcome::End::signalled);
  CHECK(outcome.describe() == "killed by SIGSEGV");
}

TEST_CASE("a timeout kills the whole process group including background children", "[process]") {
  Collected out;
  auto spec = sh("sleep 300 & echo $!; exec sleep 300");
  spec.timeout = 500ms;
  const auto t0 = std::chrono::steady_clock::now();
  auto outcome = bw::run_process(spec, out.fn());
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK(outcome.end == bw::ProcessOutcome::End::timed_out);
  CHECK_THAT(outcome.describe(), Catch::Contains("timed out"));
  REQUIRE(out.lines.size() == 1);
  CHECK(process_gone(std::stoi(out.lines[0])));
}

TEST_CASE("cancellation stops a process that ignores SIGTERM with SIGKILL after the grace", "[process]") {
  std::stop_source stop;
  Collected out;
  auto spec = sh("trap '' TERM; sleep 300 & echo $!; while :; do sleep 1; done");
  spec.kill_grace = 300ms;
  const auto t0 = std::chrono::steady_clock::now();
  auto outcome = bw::run_process(
      spec,
      [&](std::string_view line) {
        out.lines.emplace_back(line);
        stop.request_stop();  // cancel as soon as it is running
      },
      stop.get_token());
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK(outcome.end == bw::ProcessOutcome::End::cancelled);
  // The shell may also report its killed `sleep 1` ("Killed") before it dies itself.
  REQUIRE_FALSE(out.lines.empty());
  CHECK(process_gone(std::stoi(out.lines[0])));
}

TEST_CASE("what a process leaves behind in its group dies with it", "[process]") {
  Collected out;
  auto outcome = bw::run_process(sh("sleep 300 & echo $!; exit 0"), out.fn());
  CHECK(outcome.ok());
  REQUIRE(out.lines.size() == 1);
  CHECK(process_gone(std::stoi(out.lines[0])));
}

TEST_CASE("a stop requested before the start runs nothing", "[process]") {
  std::stop_source stop;
  stop.request_stop();
  auto outcome = bw::run_process(sh("echo ran"), {}, stop.get_token());
  CHECK(outcome.end == bw::ProcessOutcome::End::cancelled);
}

TEST_CASE("Redactor hides secrets and their base64 forms", "[log]") {
  bw::Redactor r;
  r.add("s3cr3t-token-value");
  const std::string basic = bw::base64_encode("x-access-token:s3cr3t-token-value");
  const std::string text = "tok=s3cr3t-token-value hdr=Basic " + basic + " raw=" + bw::base64_encode("s3cr3t-token-value");
  const std::string red = r.apply(text);
  CHECK(red.find("s3cr3t") == std::string::npos);
  CHECK(red.find(bw::base64_encode("s3cr3t-token-value")) == std::string::npos);
  // The part of the header encoding that depends on the token is gone.
  CHECK(red.find(basic.substr(24, 8)) == std::string::npos);
  CHECK_THAT(red, Catch::Contains("tok=[redacted]"));
  for (std::string prefix : {"", "a", "ab", "abc"}) {
    const std::string enc = bw::base64_encode(prefix + "s3cr3t-token-value" + "zz");
    CHECK(r.apply(enc) != enc);
  }
}

TEST_CASE("LogTail keeps a bounded tail cut at line boundaries", "[log]") {
  bw::LogTail tail(20);
  for (int i = 0; i < 10; ++i) tail.append("line " + std::to_string(i));
  const std::string t = tail.text();
  CHECK_THAT(t, Catch::StartsWith("[... ") && Catch::EndsWith("line 8\nline 9\n"));
  CHECK_THAT(t, !Catch::Contains("line 7"));
  bw::LogTail small(1000);
  small.append("a");
  CHECK(small.text() == "a\n");
}

TEST_CASE("ArgvRunner runs its command per job with BLACKTREE_JOB_ID", "[argv_runner]") {
  bw::ArgvRunnerConfig cfg;
  cfg.argv = {"/bin/sh", "-c", "echo \"job=$BLACKTREE_JOB_ID\"; echo \"$GREETING\" >&2; exit ${CODE:-0}"};
  cfg.env["GREETING"] = "hi";
  bw::ArgvRunner runner(cfg);
  blacktree::core::Job job;
  job.id = "job-42";
  std::mutex m;
  std::vector<std::pair<std::string, std::string>> events;
  auto emit = [&](std::string_view stage, std::string_view l) {
    std::lock_guard lock(m);
    events.emplace_back(std::string(stage), std::string(l));
  };
  auto result = runner.run(job, emit, {});
  CHECK(result.success);
  CHECK(result.job_id == "job-42");
  CHECK(result.error.empty());
  CHECK(result.logs == "job=job-42\nhi\n");
  REQUIRE(events.size() == 3);
  for (auto& [stage, line] : events) CHECK(stage == "building");
  CHECK(events[1].second == "job=job-42");

  cfg.env["CODE"] = "7";
  bw::ArgvRunner failing(cfg);
  result = failing.run(job, {}, {});
  CHECK_FALSE(result.success);
  CHECK_THAT(result.error, Catch::Contains("exited with code 7"));
}

TEST_CASE("ArgvRunner honours the job's timeout and cancellation", "[argv_runner]") {
  bw::ArgvRunnerConfig cfg;
  cfg.argv = {"/bin/sh", "-c", "echo started; exec sleep 300"};
  cfg.default_timeout = 60s;
  bw::ArgvRunner runner(cfg);
  blacktree::core::Job job;
  job.id = "slow";
  job.timeout = 300ms;
  auto result = runner.run(job, {}, {});
  CHECK_FALSE(result.success);
  CHECK_THAT(result.error, Catch::Contains("timed out"));

  job.timeout = 0ms;
  std::stop_source stop;
  result = runner.run(
      job, [&](std::string_view, std::string_view line) { if (line == "started") stop.request_stop(); },
      stop.get_token());
  CHECK_FALSE(result.success);
  CHECK_THAT(result.error, Catch::Contains("cancelled"));
}

TEST_CASE("a throwing line callback still leaves no process behind", "[process]") {
  std::string pid;
  auto spec = sh("sleep 300 & echo $!; exec sleep 300");
  CHECK_THROWS_AS(bw::run_process(spec,
                                  [&](std::string_view line) {
                                    pid = std::string(line);
                                    throw std::runtime_error("callback failed");
                                  }),
                  std::runtime_error);
  REQUIRE_FALSE(pid.empty());
  CHECK(process_gone(std::stoi(pid)));
}

namespace {

// A daemon as a job might start one: a new session (so it is in no process
// group of ours) behind a double fork (so its parent is gone and it is
// reparented away from the job), its stdio detached (so no pipe of ours
// tells us it is alive). It writes its pid to `pid_file` once running.
std::string daemon_script(const std::string& pid_file) {
  // Its pid as /proc (the host's view) numbers it, also inside a PID namespace.
  return "(setsid sh -c 'read -r pid rest < /proc/self/stat; echo $pid > \"$0\"; exec sleep 300' '" + pid_file +
         "' </dev/null >/dev/null 2>&1 &); "
         "while [ ! -s '" + pid_file + "' ]; do sleep 0.05; done; echo daemon started";
}

pid_t read_pid(const std::string& pid_file) {
  std::ifstream in(pid_file);
  long pid = 0;
  in >> pid;
  return static_cast<pid_t>(pid);
}

}  // namespace

TEST_CASE("a setsid + double-fork daemon started by run_process is gone when it returns", "[process][security]") {
  blacktree::test::TempDir tmp;
  const std::string pid_file = (tmp / "daemon.pid").string();
  // Each containment that this host offers: the automatic choice, and the
  // PID-namespace fallback forced (it needs root).
  std::vector<bw::Containment> modes{bw::Containment::automatic};
  if (::geteuid() == 0) modes.push_back(bw::Containment::pid_namespace);
  for (const auto mode : modes) {
    std::filesystem::remove(pid_file);
    auto spec = sh(daemon_script(pid_file));
    spec.containment = mode;
    Collected out;
    const auto outcome = bw::run_process(spec, out.fn());
    INFO("containment " << static_cast<int>(mode) << ": " << outcome.describe());
    CHECK(outcome.ok());
    const pid_t daemon = read_pid(pid_file);
    REQUIRE(daemon > 0);
    const bool gone = process_gone(daemon);
    if (!gone) ::kill(daemon, SIGKILL);  // a failing run must not leave it either
    CHECK(gone);
  }
}

TEST_CASE("a job cgroup whose worker was killed with SIGKILL is ended by the next worker", "[process][security]") {
  if (bw::automatic_containment() != bw::Containment::cgroup) {
    WARN("not run: this host offers no cgroup v2 containment");
    return;
  }
  blacktree::test::TempDir tmp;
  const std::string pid_file = (tmp / "daemon.pid").string();
  // The "worker": a child of ours that runs a job which starts a daemon, and
  // is then killed with SIGKILL, with no chance to end its job's processes.
  const pid_t worker = ::fork();
  REQUIRE(worker >= 0);
  if (worker == 0) {
    auto spec = sh(daemon_script(pid_file) + "; exec sleep 300");
    (void)bw::run_process(spec, [](std::string_view) {});
    ::_exit(0);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{worker};
  pid_t daemon = 0;
  for (const auto deadline = std::chrono::steady_clock::now() + 10s;
       (daemon = read_pid(pid_file)) <= 0 && std::chrono::steady_clock::now() < deadline;) {
    std::this_thread::sleep_for(20ms);  // polls a file another process writes: nothing to wait on
  }
  REQUIRE(daemon > 0);
  ::kill(worker, SIGKILL);
  REQUIRE(::waitpid(worker, nullptr, 0) == worker);
  REQUIRE_FALSE(process_gone(daemon));  // the fault: the job outlived its worker

  const auto ended = bw::end_orphaned_job_cgroups();
  const bool gone = process_gone(daemon);
  if (!gone) ::kill(daemon, SIGKILL);
  CHECK(ended >= 1);
  CHECK(gone);
}

TEST_CASE("ArgvRunner: a daemon the job starts is gone when the status arrives, also on timeout", "[argv_runner][security]") {
  blacktree::test::TempDir tmp;
  const std::string pid_file = (tmp / "daemon.pid").string();
  bw::ArgvRunnerConfig cfg;
  cfg.argv = {"/bin/sh", "-c", daemon_script(pid_file)};
  bw::ArgvRunner runner(cfg);
  blacktree::core::Job job;
  job.id = "daemonises";
  auto result = runner.run(job, {}, {});
  CHECK(result.success);
  pid_t daemon = read_pid(pid_file);
  REQUIRE(daemon > 0);
  bool gone = process_gone(daemon);
  if (!gone) ::kill(daemon, SIGKILL);
  CHECK(gone);

  std::filesystem::remove(pid_file);
  cfg.argv = {"/bin/sh", "-c", daemon_script(pid_file) + "; exec sleep 300"};
  bw::ArgvRunner slow(cfg);
  job.timeout = 1500ms;
  result = slow.run(job, {}, {});
  CHECK_THAT(result.error, Catch::Contains("timed out"));
  daemon = read_pid(pid_file);
  REQUIRE(daemon > 0);
  gone = process_gone(daemon);
  if (!gone) ::kill(daemon, SIGKILL);
  CHECK(gone);
}

TEST_CASE("ArgvRunner: a secret straddling the 16 KiB line split never reaches the logs in pieces", "[argv_runner][security]") {
  const std::string token = "ghs_SplitTokenAbcdefghijklmnop0123456789";
  bw::ArgvRunnerConfig cfg;
  // 16 KiB - 10 bytes of filler, then the token: the split falls inside it.
  cfg.argv = {"/bin/sh", "-c", "head -c 16374 /dev/zero | tr '\\0' x; printf '%s tail\\n' \"$T\""};
  cfg.env["T"] = token;
  bw::ArgvRunner runner(cfg);
  bw::BuildSpec build;
  build.github_token = blacktree::core::Secret(token);
  blacktree::core::Job job;
  job.id = "split";
  job.payload = blacktree::core::Payload(build);
  std::string events;
  const auto result = runner.run(job, [&](std::string_view, std::string_view l) { events.append(l).append("\n"); }, {});
  CHECK(result.success);
  for (const std::string* text : {&result.logs, static_cast<const std::string*>(&events)}) {
    CHECK_THAT(*text, Catch::Contains("[redacted] tail"));
    // Neither half, nor any 8 bytes of the token, appear anywhere.
    for (std::size_t i = 0; i + 8 <= token.size(); ++i) CHECK(text->find(token.substr(i, 8)) == std::string::npos);
  }
}
