// Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
//
// local_process: blacktree::core embedded in a program of its own, with a
// transport of its own whose workers run each job as a local process.
//
//   InMemoryQueue          the job source (a broker's delivery semantics, no broker)
//   InMemoryStatusSink     where final statuses go
//   WorkerPool             the registered workers and their free slots
//   HealthMonitor          pings workers; a worker takes jobs once it answers
//   Dispatcher             receive -> lease a slot -> run -> publish the status -> ack
//   LocalProcessTransport  (below) runs a job's payload as a child process
//
// docs/embedding.md walks through this file. Linux (posix_spawn, pidfd).
// Exits 0 when every job ended as expected, 1 otherwise, within seconds:
// it gives up (non-zero) after 10 s of waiting for statuses.

#include <blacktree/core.hpp>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/error.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

extern char** environ;

namespace bt = blacktree::core;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------
// Child processes, POSIX only; nothing here knows about blacktree.

// This example's payload convention: a command line whose words, separated by
// spaces or tabs, are the argv. There is no shell, so no quoting, globbing,
// variables, pipes or redirections; the first word is looked up in PATH.
std::vector<std::string> split_argv(std::string_view payload) {
  std::vector<std::string> args;
  std::size_t at = 0;
  while ((at = payload.find_first_not_of(" \t", at)) != std::string_view::npos) {
    const std::size_t end = std::min(payload.find_first_of(" \t", at), payload.size());
    args.emplace_back(payload.substr(at, end - at));
    at = end;
  }
  return args;
}

// Starts args[0] in a process group of its own (so cancelling can kill all it
// started), stdin on /dev/null, stdout and stderr on one pipe. On success sets
// `pid` and `output` (the pipe's read end) and returns 0, else an errno value.
int spawn(const std::vector<std::string>& args, pid_t& pid, int& output) {
  int fds[2];
  // O_CLOEXEC: a child spawned meanwhile for another job must not inherit our
  // write end, or this pipe would not reach EOF until that child exits too.
  if (::pipe2(fds, O_CLOEXEC) != 0) return errno;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t no_signals, sigpipe;
  sigemptyset(&no_signals);
  sigemptyset(&sigpipe);
  sigaddset(&sigpipe, SIGPIPE);
  // Own process group; signal mask and SIGPIPE as a fresh process has them.
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  posix_spawnattr_setsigdefault(&attr, &sigpipe);
  std::vector<char*> argv;
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  const int rc = ::posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);  // from now on only the child (and what it starts) holds the write end
  if (rc != 0) {
    ::close(fds[0]);
    return rc;
  }
  output = fds[0];
  return 0;
}

// A descriptor that becomes readable when the process exits (Linux >= 5.3);
// -1 where there is none, and then reaping falls back to a blocking waitpid.
int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  return -1;
#endif
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return "killed by signal " + std::to_string(WTERMSIG(status)) + " (" + ::strsignal(WTERMSIG(status)) + ")";
  return "ended with wait status " + std::to_string(status);
}

// ---------------------------------------------------------------------------
// The transport.

// The run's completion handler, whatever its type, kept until the run ends.
// bt::CompletionHandler posts it to its associated executor (never inline, as
// concepts.hpp requires) and counts the run as outstanding work until then.
using RunCompletion = bt::CompletionHandler<void(std::error_code, bt::JobResult)>;

// This example's jobs carry their command line as text (a std::string payload).
std::string_view command_of(const bt::Job& job) {
  const auto* text = job.payload.get<std::string>();
  return text != nullptr ? std::string_view(*text) : std::string_view();
}

/// Workers are slot holders in this process, known by address; async_run
/// runs the job's payload (see split_argv) as a child process and reports
/// each line of its output as progress. Models bt::WorkerTransport.
class LocalProcessTransport {
 public:
  explicit LocalProcessTransport(asio::any_io_executor executor)
      : executor_(std::move(executor)), shared_(std::make_shared<Shared>()) {
    shared_->incarnation = "local-process-" + std::to_string(::getpid());
  }
  LocalProcessTransport(const LocalProcessTransport&) = delete;
  LocalProcessTransport& operator=(const LocalProcessTransport&) = delete;

  // No child outlives the transport.
  ~LocalProcessTransport() {
    std::lock_guard lock(shared_->mutex);
    for (auto& [address, worker] : shared_->workers)
      for (auto& [id, weak] : worker.runs)
        if (auto run = weak.lock()) run->kill_group("transport destroyed", true);
  }

  void add_worker(std::string address, std::uint32_t capacity) {
    std::lock_guard lock(shared_->mutex);
    shared_->workers[std::move(address)].capacity = capacity;
  }
  std::string incarnation() const { return shared_->incarnation; }

  template <class Token>
  auto async_run(const bt::WorkerInfo& worker, const bt::Job& job, bt::ProgressCallback progress, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, bt::JobResult)>(
        [this, &worker, &job](auto handler, bt::ProgressCallback on_progress) {
          auto slot = asio::get_associated_cancellation_slot(handler);
          auto run = start_run(worker, job, std::move(on_progress), RunCompletion(std::move(handler), executor_));
          if (run && slot.is_connected()) slot.template emplace<CancelRun>(run);
        },
        token, std::move(progress));
  }

  // Answers at once: the workers live in this process. Hence no use for the deadline.
  template <class Token>
  auto async_ping(const bt::WorkerInfo& worker, std::chrono::milliseconds /*deadline*/, Token&& token) {
    return asio::async_initiate<Token, void(std::error_code, bt::PingReply)>(
        [this, &worker](auto handler) {
          std::error_code ec;
          bt::PingReply reply = ping(worker, ec);
          auto executor = asio::get_associated_executor(handler, executor_);
          asio::post(executor, [h = std::move(handler), ec, r = std::move(reply)]() mutable {
            std::move(h)(ec, std::move(r));
          });
        },
        token);
  }

 private:
  static constexpr std::size_t kMaxLine = 64 * 1024;  // longer lines are reported in pieces
  static constexpr std::size_t kLogLineLimit = 512;   // per line kept in the tail
  static constexpr std::size_t kTailLines = 20;       // JobResult::logs is this many lines at most

  struct Run;
  struct Worker {
    std::uint32_t capacity = 0;
    std::map<std::uint64_t, std::weak_ptr<Run>> runs;
  };
  struct Shared {  // outlives the transport while runs hold it
    std::mutex mutex;
    std::unordered_map<std::string, Worker> workers;  // by address
    std::uint64_t next_run = 1;
    std::string incarnation;
  };

  // One child process, from spawn to reap. Its I/O objects, tail and result
  // live on `strand`; cancellation may come from any thread and touches only
  // what `mutex` guards.
  struct Run : std::enable_shared_from_this<Run> {
    Run(const asio::any_io_executor& executor, RunCompletion c)
        : strand(asio::make_strand(executor)), output(strand), pidfd(strand), timer(strand), completion(std::move(c)) {}

    std::shared_ptr<Shared> shared;
    std::string address, job_id, worker_id;
    std::uint64_t id = 0;
    std::chrono::milliseconds timeout{0};
    bt::ProgressCallback progress;
    asio::strand<asio::any_io_executor> strand;
    asio::posix::stream_descriptor output;  // the child's stdout and stderr
    asio::posix::stream_descriptor pidfd;   // readable once the child exited
    asio::steady_timer timer;               // the job's timeout
    std::string pending;                    // read, not yet a whole line
    std::deque<std::string> tail;
    RunCompletion completion;

    std::mutex mutex;
    pid_t pid = -1;
    bool reaped = false;      // its pid may belong to someone else now: never signal it
    bool cancelled = false;   // complete with operation_aborted
    std::string kill_reason;  // why we killed it, if we did

    void start() {
      report(bt::Phase::accepted, {});
      if (timeout.count() > 0) {
        timer.expires_after(timeout);
        timer.async_wait([self = shared_from_this()](std::error_code ec) {
          if (!ec) self->kill_group("timed out after " + std::to_string(self->timeout.count()) + " ms", false);
        });
      }
      read_line();
    }

    void read_line() {
      asio::async_read_until(output, asio::dynamic_buffer(pending, kMaxLine), '\n',
                             [self = shared_from_this()](std::error_code ec, std::size_t n) { self->on_read(ec, n); });
    }

    void on_read(std::error_code ec, std::size_t n) {
      if (!ec || ec == asio::error::not_found) {  // a line, or kMaxLine bytes without a newline
        const std::size_t taken = ec ? pending.size() : n;
        add_line(pending.substr(0, ec ? taken : taken - 1));
        pending.erase(0, taken);
        read_line();
        return;
      }
      // EOF (or a read error): the child, and whatever it started, closed its
      // output. It is exiting or has exited; the pidfd says when without blocking.
      if (!pending.empty()) add_line(std::exchange(pending, {}));
      if (!pidfd.is_open()) return reap();
      pidfd.async_wait(asio::posix::stream_descriptor::wait_read,
                       [self = shared_from_this()](std::error_code) { self->reap(); });
    }

    void add_line(std::string line) {
      if (line.size() > kLogLineLimit) line.resize(kLogLineLimit);
      report(bt::Phase::running, line);  // a process has one stage: it runs
      tail.push_back(std::move(line));
      if (tail.size() > kTailLines) tail.pop_front();
    }

    void report(bt::Phase phase, std::string line) {
      if (progress) progress(bt::ProgressEvent{job_id, worker_id, phase, {}, std::move(line)});
    }

    // From any thread (cancellation) or the strand (timeout).
    void kill_group(std::string reason, bool cancel) {
      std::lock_guard lock(mutex);
      if (reaped || pid <= 0 || !kill_reason.empty()) return;
      kill_reason = std::move(reason);
      cancelled = cancel;
      ::kill(-pid, SIGKILL);  // the whole group; SIGKILL cannot be ignored
    }

    void reap() {
      bt::JobResult result;
      result.job_id = job_id;
      result.worker_id = worker_id;
      bool aborted = false;
      {
        std::lock_guard lock(mutex);
        int status = 0;
        pid_t r;
        while ((r = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
        }
        reaped = true;
        aborted = cancelled;
        result.success = r == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 && kill_reason.empty();
        const std::string how =
            r == pid ? describe_wait_status(status) : "waitpid: " + std::generic_category().message(errno);
        if (!result.success) result.error = kill_reason.empty() ? how : kill_reason + "; " + how;
      }
      timer.cancel();
      output.close();
      pidfd.close();
      for (const auto& line : tail) result.logs += line + '\n';
      forget(shared, address, id);
      report(bt::Phase::finished, {});
      completion.complete(aborted ? asio::error::operation_aborted : std::error_code{}, std::move(result));
    }
  };

  // Installed in the handler's cancellation slot; holds the run weakly, so an
  // emit after the run completed finds nothing to do. Killing a process leaves
  // what it did half done: partial (a cancel asked for, the run reported) and
  // terminal (the run let go of) are honoured, total (no side effects) is not.
  class CancelRun {
   public:
    explicit CancelRun(std::weak_ptr<Run> run) : run_(std::move(run)) {}
    void operator()(asio::cancellation_type type) {
      if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial)) ==
          asio::cancellation_type::none)
        return;
      if (auto run = run_.lock()) run->kill_group("cancelled", true);
    }

   private:
    std::weak_ptr<Run> run_;
  };

  static void forget(const std::shared_ptr<Shared>& shared, const std::string& address, std::uint64_t id) {
    std::lock_guard lock(shared->mutex);
    if (auto it = shared->workers.find(address); it != shared->workers.end()) it->second.runs.erase(id);
  }

  // Returns the run if a child was started; otherwise the handler is already posted.
  std::shared_ptr<Run> start_run(const bt::WorkerInfo& worker, const bt::Job& job, bt::ProgressCallback progress,
                                 RunCompletion completion) {
    auto run = std::make_shared<Run>(executor_, std::move(completion));
    run->shared = shared_;
    run->address = worker.address;
    run->job_id = job.id;
    run->worker_id = worker.id;
    run->timeout = job.timeout;
    run->progress = std::move(progress);
    auto finish_now = [&](std::error_code ec, std::string error) {
      bt::JobResult result;
      result.job_id = job.id;
      result.worker_id = worker.id;
      result.error = std::move(error);
      run->completion.complete(ec, std::move(result));
      return nullptr;
    };

    {  // Take a slot of the worker, as a remote worker would, or say why not.
      std::lock_guard lock(shared_->mutex);
      auto it = shared_->workers.find(worker.address);
      if (it == shared_->workers.end())
        return finish_now(bt::errc::worker_unreachable, "no local worker at address '" + worker.address + "'");
      if (it->second.runs.size() >= it->second.capacity)
        return finish_now(bt::errc::worker_refused, "worker " + worker.id + " is full");
      run->id = shared_->next_run++;
      it->second.runs.emplace(run->id, run);
    }

    // From here on the worker has accepted the job: a failure to start it is
    // the job's failure (a status), not the transport's (an error code).
    const auto args = split_argv(command_of(job));
    pid_t pid = -1;
    int output = -1;
    const int err = args.empty() ? EINVAL : spawn(args, pid, output);
    if (err != 0) {
      forget(shared_, worker.address, run->id);
      return finish_now({}, args.empty() ? "the payload is empty: no command to run"
                                         : "cannot start '" + args[0] + "': " + std::generic_category().message(err));
    }
    {
      std::lock_guard lock(run->mutex);
      run->pid = pid;
    }
    run->output.assign(output);
    if (const int fd = open_pidfd(pid); fd >= 0) {
      std::error_code ec;
      run->pidfd.assign(fd, ec);
      if (ec) ::close(fd);  // then reap() falls back to a plain waitpid
    }
    asio::post(run->strand, [run] { run->start(); });
    return run;
  }

  bt::PingReply ping(const bt::WorkerInfo& worker, std::error_code& ec) const {
    bt::PingReply reply;
    std::lock_guard lock(shared_->mutex);
    auto it = shared_->workers.find(worker.address);
    if (it == shared_->workers.end()) {
      ec = bt::errc::worker_unreachable;
      return reply;
    }
    reply.worker_id = worker.id;
    reply.incarnation = shared_->incarnation;
    reply.capacity = it->second.capacity;
    for (const auto& [id, weak] : it->second.runs)
      if (auto run = weak.lock()) reply.running_jobs.push_back(run->job_id);
    reply.state = reply.running_jobs.size() < reply.capacity ? bt::WorkerState::free : bt::WorkerState::busy;
    return reply;
  }

  asio::any_io_executor executor_;
  std::shared_ptr<Shared> shared_;
};

static_assert(bt::WorkerTransport<LocalProcessTransport>);

// ---------------------------------------------------------------------------
// The program.

// Hooks are opt-in: DispatcherObserver's do nothing. on_progress runs on the
// transport's thread, the others on the dispatcher's strand; one thread runs
// the io_context here, so printing needs no lock.
struct ConsoleObserver : bt::DispatcherObserver {
  static constexpr bool wants_progress = true;
  void on_assigned(const bt::Job& job, const bt::WorkerInfo& worker) {
    std::cout << "  [" << job.id << "] -> " << worker.id << " runs '" << command_of(job) << "'\n";
  }
  void on_progress(const bt::ProgressEvent& event) {
    if (!event.line.empty()) std::cout << "  [" << event.job_id << "] | " << event.line << '\n';
  }
  void on_dead_lettered(const bt::Job& job, std::string_view reason) {
    std::cout << "  [" << (job.id.empty() ? "(no id)" : job.id) << "] dead-lettered: " << reason << '\n';
  }
};

using Dispatcher = bt::Dispatcher<bt::InMemoryQueue, LocalProcessTransport, bt::InMemoryStatusSink, bt::WorkerPool,
                                  ConsoleObserver>;

// One job to publish and what must become of it.
struct Case {
  enum Outcome { succeeds, fails, dead_lettered };
  std::string id;
  std::string payload;
  Outcome outcome;
  std::string must_mention;  // in the logs (success), error (failure) or dead-letter reason
  bt::Labels labels = {};
  std::chrono::milliseconds timeout{0};
  std::string worker = {};  // non-empty: it must run there
};

const std::vector<Case> kCases = {
    {"hello", "echo hello from a local process", Case::succeeds, "hello from a local process"},
    {"count", "seq 1 3", Case::succeeds, "1\n2\n3\n"},
    {"true", "true", Case::succeeds, ""},
    {"false", "false", Case::fails, "exited with status 1"},
    {"us-only", "uname -s", Case::succeeds, "", {{"region", "us"}}, 0ms, "worker-us"},
    {"too-slow", "sleep 30", Case::fails, "timed out after 300 ms", {}, 300ms},
    {"no-such-command", "blacktree-no-such-command --help", Case::fails, "cannot start"},
    {"", "echo nobody could match my status", Case::dead_lettered, "jobId is missing"},
};

// Runs the io_context's handlers on this thread until `done()` holds; false
// if `deadline` passed first or nothing is left to run. Never sleeps.
template <class Predicate>
bool run_until(asio::io_context& io, Predicate done, std::chrono::steady_clock::time_point deadline) {
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    if (io.run_one_until(deadline) == 0 && io.stopped()) return done();
  }
  return true;
}

void print_report(const std::vector<bt::JobResult>& results, const std::vector<bt::InMemoryQueue::DeadLetter>& dead) {
  std::cout << "\nStatuses (" << results.size() << "):\n";
  for (const bt::JobResult& r : results) {
    std::cout << "  " << std::left << std::setw(16) << r.job_id << (r.success ? "ok    " : "FAILED") << "  on "
              << r.worker_id << ", attempts " << r.attempts << '\n';
    if (!r.error.empty()) std::cout << "      error: " << r.error << '\n';
    std::istringstream logs(r.logs);
    for (std::string line; std::getline(logs, line);) std::cout << "      log | " << line << '\n';
  }
  std::cout << "\nDead letters (" << dead.size() << "):\n";
  for (const auto& d : dead) std::cout << "  payload '" << command_of(d.job) << "': " << d.reason << '\n';
}

// What differs from kCases; empty when every job ended as expected.
std::vector<std::string> check(const std::vector<bt::JobResult>& results,
                               const std::vector<bt::InMemoryQueue::DeadLetter>& dead) {
  std::vector<std::string> problems;
  for (const Case& c : kCases) {
    if (c.outcome == Case::dead_lettered) {
      if (std::none_of(dead.begin(), dead.end(), [&](const auto& d) {
            return command_of(d.job) == c.payload && d.reason.find(c.must_mention) != std::string::npos;
          }))
        problems.push_back("'" + c.payload + "' was not dead-lettered for '" + c.must_mention + "'");
      continue;
    }
    auto is_this = [&](const bt::JobResult& r) { return r.job_id == c.id; };
    if (std::count_if(results.begin(), results.end(), is_this) != 1) {
      problems.push_back(c.id + ": expected exactly one status");
      continue;
    }
    const bt::JobResult& got = *std::find_if(results.begin(), results.end(), is_this);
    const bool want = c.outcome == Case::succeeds;
    if (got.success != want) problems.push_back(c.id + (want ? ": failed: " + got.error : ": succeeded"));
    if ((want ? got.logs : got.error).find(c.must_mention) == std::string::npos)
      problems.push_back(c.id + ": '" + c.must_mention + "' not in its " + (want ? "logs" : "error"));
    if (!c.worker.empty() && got.worker_id != c.worker) problems.push_back(c.id + ": ran on " + got.worker_id);
  }
  return problems;
}

}  // namespace

int main() {
  asio::io_context io;
  const asio::any_io_executor executor = io.get_executor();

  // The concept models, the pool and the two active objects. Each is declared
  // after what it refers to, so it is destroyed first.
  bt::InMemoryQueue queue(executor);
  bt::InMemoryStatusSink sink(executor);
  LocalProcessTransport transport(executor);
  bt::WorkerPool pool(executor);
  bt::HealthOptions health;
  health.interval = 200ms;
  health.timeout = 100ms;
  bt::HealthMonitor<LocalProcessTransport> monitor(executor, transport, pool, health);
  Dispatcher dispatcher(executor, queue, transport, sink, pool);

  // Two workers with two slots each. The pool holds them as `registering`
  // until the monitor's first ping is answered.
  for (const std::string region : {"eu", "us"}) {
    bt::WorkerInfo info;
    info.id = "worker-" + region;
    info.address = "local/" + region;
    info.labels = {{"region", region}};
    info.capacity = 2;
    info.incarnation = transport.incarnation();
    transport.add_worker(info.address, info.capacity);
    if (auto registered = pool.register_worker(std::move(info)); !registered) {
      std::cerr << "local_process: cannot register worker-" << region << ": " << registered.error().message() << '\n';
      return 1;
    }
  }
  monitor.start();
  dispatcher.start();

  std::size_t expected_statuses = 0, expected_dead_letters = 0;
  for (const Case& c : kCases) {
    bt::Job job;
    job.id = c.id;
    job.payload = bt::Payload(c.payload);
    job.required_labels = c.labels;
    job.timeout = c.timeout;
    queue.publish(std::move(job));
    ++(c.outcome == Case::dead_lettered ? expected_dead_letters : expected_statuses);
  }

  std::cout << "Running " << kCases.size() << " jobs on 2 workers:\n";
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  const bool settled = run_until(
      io, [&] { return sink.size() >= expected_statuses && queue.dead_letters().size() >= expected_dead_letters; },
      deadline);

  // Graceful stop: take nothing new, let what is in flight settle (here it all has).
  std::optional<std::error_code> stop_result;
  dispatcher.async_stop(2s, [&](std::error_code ec) { stop_result = ec; });
  const bool stopped = run_until(io, [&] { return stop_result.has_value(); }, deadline + 3s);
  monitor.stop();

  const auto results = sink.results();
  const auto dead_letters = queue.dead_letters();
  print_report(results, dead_letters);

  auto problems = check(results, dead_letters);
  if (!settled) problems.push_back("not every job had a status within 10 s");
  if (!stopped) problems.push_back("the dispatcher did not stop in time");
  else if (*stop_result) problems.push_back("graceful stop: " + stop_result->message());
  // A job is acked only once its status is confirmed; nothing may stay unsettled.
  if (queue.acked() != expected_statuses || queue.unacked() != 0)
    problems.push_back("acked " + std::to_string(queue.acked()) + ", unacked " + std::to_string(queue.unacked()));

  if (!problems.empty()) {
    std::cerr << "\nlocal_process: FAILED\n";
    for (const auto& p : problems) std::cerr << "  - " << p << '\n';
    return 1;
  }
  std::cout << "\nlocal_process: every job ended as expected\n";
  return 0;
}
