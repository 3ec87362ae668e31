#!/usr/bin/python3
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""End-to-end benchmark (issue 4): RabbitMQ -> blacktree-orchestrator -> gRPC ->
blacktree-worker processes, against the raw rabbitmq-c loop of bench/amqp on
the same broker in the same run. Not part of ctest.

    /usr/bin/python3 bench/e2e/run.py [--jobs 50000] [--workers 4] [--capacity 4]
        [--extra-capacity 16] [--mem-sizes 10000,100000] [--mem-wait-s 10]
        [--latency-jobs 500] [--latency-interval-ms 20] [--latency-reps 3]
        [--latency-warmup 20] [--latency-timeout-s 30] [--build-dir build-bench]
        [--skip-latency] [--skip-baseline] [--skip-e2e] [--skip-memory]

Phases, all against one private broker (tests/support/rabbitmq.sh):
 0. latency at light load (issue 15; first, on the fresh broker): one
    persistent job every --latency-interval-ms on an absolute schedule, the
    time from just before basic_publish to the status's arrival at a pika
    consumer, per job, the first --latency-warmup jobs of each rep not counted.
    --latency-reps interleaved pairs, each on fresh queues: the baseline
    (blacktree_bench_amqp --queue Q --status-queue S --jobs N --window W: the
    raw rabbitmq-c loop, statuses matched by the correlation id it copies),
    then the system (the orchestrator + `workers` workers, runner as below,
    statuses matched by their jobId). p50/p90/p99/max per rep; the summary
    has the medians over reps, the system/baseline ratios and the targets
    p50 <= 2 ms, p99 <= 5 ms, and the orchestrator's CPU and context
    switches per job (and its CPU while idle, over 1 s before the rep). A rep
    still missing a status --latency-timeout-s after its last publish fails.
    Each job's publish and arrival times (wall clock, ns) go to
    lat<rep>-<side>.json in the work dir, next to the logs.
 1. baseline (before phase 2 and again after it; the ratio uses the mean):
    blacktree_bench_amqp --jobs N --window W (W = workers x capacity,
    the prefetch the orchestrator reaches with every slot free): the raw
    rabbitmq-c loop (consume, publish a persistent status with confirms, ack on
    the confirm) and, as printed by that binary, the in-process AMQP source +
    Dispatcher + sink with loopback workers.
 2. end to end: N persistent seed-format jobs pre-published to a fresh
    execute queue; the orchestrator (--queue amqp) and `workers` worker
    processes (--runner argv -- true, capacity each) are started; jobs/s is
    measured until the status queue holds N statuses (polled with a passive
    queue.declare: a count of confirmed, persisted statuses). The orchestrator's
    VmHWM is read at the end; CPU seconds of the orchestrator, the workers and
    the workers' `true` children come from /proc/<pid>/stat.
    Optionally repeated with --extra-capacity per worker, to see how much of the
    time is the per-job process spawn.
 3. memory: for each size in --mem-sizes, a fresh queue holding that many jobs,
    the orchestrator started (a) with no worker, (b) with the workers running
    `sleep` (every slot busy, so the queue stays full); after --mem-wait-s its
    VmRSS / VmHWM and the queue's unacknowledged count are read.
--runner noop (the default) uses the workers' no-op runner; --runner true
runs `true` through the argv runner, to see the cost of a process per job.
"""

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pika

REPO = Path(__file__).resolve().parents[2]
RABBITMQ_SH = REPO / "tests" / "support" / "rabbitmq.sh"


def log(msg):
    print(msg, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def proc_status(pid, key):
    """A /proc/<pid>/status field in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """(own user+system seconds, waited-for children's user+system seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after ")": state=0 ... utime=11 stime=12 cutime=13 cstime=14
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


def proc_switches(pid):
    """Context switches (voluntary + involuntary) summed over the live threads
    of a process: about how many times its threads went to sleep and woke."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread exited meanwhile
    return total


class Broker:
    def __init__(self, directory):
        self.dir = Path(directory)
        subprocess.run(["bash", str(RABBITMQ_SH), "start", str(self.dir)], check=True, timeout=180,
                       stdout=subprocess.DEVNULL)
        self.port = int((self.dir / "port").read_text())
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def stop(self):
        subprocess.run(["bash", str(RABBITMQ_SH), "stop", str(self.dir)], check=False, timeout=180,
                       stdout=subprocess.DEVNULL)

    def connection(self):
        return pika.BlockingConnection(pika.URLParameters(self.url + "?heartbeat=0"))

    def cpu_s(self):
        """CPU seconds the broker's OS process (beam.smp) has used so far."""
        return proc_cpu(int((self.dir / "rabbitmq.pid").read_text().strip()))[0]

    def unacked(self, queue):
        out = subprocess.run(["bash", str(RABBITMQ_SH), "ctl", str(self.dir), "list_queues", "-q", "name",
                              "messages_ready", "messages_unacknowledged"], check=True, timeout=120,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == queue:
                return int(parts[1]), int(parts[2])
        return None


def job_body(i, job_id=None):
    # tests/integration/conftest.py job(): the seed's JobRequest fields.
    return json.dumps({"jobId": job_id or f"e2e-{i}", "repoUrl": "example/app", "branch": "main",
                       "dockerfilePath": "Dockerfile", "contextDir": ".", "imageName": "app:latest",
                       "githubToken": "not-a-real-token"}).encode()


def prepublish(broker, queue, n):
    """n persistent jobs; publisher confirms would make pika wait per message,
    so publish unconfirmed and wait until the queue holds all n."""
    t0 = time.monotonic()
    with broker.connection() as conn:
        ch = conn.channel()
        ch.queue_declare(queue=queue, durable=True)
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        for i in range(n):
            ch.basic_publish(exchange="", routing_key=queue, body=job_body(i), properties=props)
        wait_until(lambda: ch.queue_declare(queue=queue, durable=True, passive=True).method.message_count >= n,
                   120, f"{n} messages in {queue}", interval=0.2)
    log(f"  pre-published {n} persistent jobs to {queue} in {time.monotonic() - t0:.1f}s")


class Proc:
    def __init__(self, name, argv, logdir, wait_text=None, env=None):
        self.name = name
        self.log_path = Path(logdir) / f"{name}.log"
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file,
                                     env=env)
        if wait_text:
            try:
                wait_until(lambda: wait_text in self.log_path.read_text(errors="replace") or
                           self.proc.poll() is not None, 60, f"'{wait_text}' in {name}'s log")
            except RuntimeError:
                self.stop(timeout=10)  # not left running when it never got ready
                raise
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited ({self.proc.returncode}); see {self.log_path}")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log_file.close()
        return self.proc.returncode


def names():
    s = uuid.uuid4().hex[:8]
    return {"execute-queue": f"e2e.execute.{s}", "status-queue": f"e2e.status.{s}",
            "events-exchange": f"e2e.events.{s}", "dead-letter-exchange": f"e2e.dlx.{s}",
            "dead-letter-queue": f"e2e.dead.{s}"}


def start_orchestrator(args, broker, q, logdir, tag):
    port, http_port = free_port(), free_port()
    argv = [str(args.bin_dir / "blacktree-orchestrator"), "--listen", f"127.0.0.1:{port}",
            "--http-listen", f"127.0.0.1:{http_port}", "--queue", "amqp", "--mq-url", broker.url,
            "--drain-timeout-s", "5", "--insecure"]  # loopback only: no TLS, no token
    for k, v in q.items():
        argv += [f"--{k}", v]
    o = Proc(f"orchestrator-{tag}", argv, logdir, wait_text="serving gRPC on port")
    o.port, o.http_port = port, http_port
    return o


def start_workers(args, orchestrator, logdir, tag, command, capacity):
    ws = []
    try:
        for i in range(args.workers):
            argv = [str(args.bin_dir / "blacktree-worker"), "--orchestrator-addr", f"127.0.0.1:{orchestrator.port}",
                    "--listen", f"127.0.0.1:{free_port()}", "--worker-id", f"{tag}-w{i}", "--drain-timeout-s", "2",
                    "--capacity", str(capacity), "--insecure"]
            argv += ["--runner", "noop"] if command == ["noop"] else ["--runner", "argv", "--", *command]
            ws.append(Proc(f"{tag}-w{i}", argv, logdir, wait_text="serving on port"))
    except Exception:
        for w in ws:  # the ones already started are not left running
            w.stop()
        raise
    return ws


def metrics(o):
    with urllib.request.urlopen(f"http://127.0.0.1:{o.http_port}/metrics", timeout=5) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                out[k] = float(v)
        return out


def run_baseline(args, broker):
    window = args.workers * args.capacity
    exe = args.build_dir / "bench" / "amqp" / "blacktree_bench_amqp"
    cmd = [str(exe), "--jobs", str(args.jobs), "--window", str(window), "--reps", "1"]
    log(f"\n== baseline: MQ_URL={broker.url} {' '.join(cmd)}")
    out = subprocess.run(cmd, env=dict(os.environ, MQ_URL=broker.url), check=True, capture_output=True,
                         text=True, timeout=3600).stdout
    sys.stdout.write(out)
    raw = ours = None
    for line in out.splitlines():
        # "  raw rabbitmq-c loop   6014 jobs/s   21 us CPU/job", "  blacktree source+sink   3274 jobs/s ..."
        if line.startswith("rep") or "jobs/s" not in line:
            continue
        if "raw rabbitmq-c loop" in line:
            raw = float(line.split("jobs/s")[0].split()[-1])
        if "blacktree source+sink" in line:
            ours = float(line.split("jobs/s")[0].split()[-1])
    return raw, ours


def run_raw_broker_cpu(args, broker, n, rate=None):
    """The broker's CPU per job under the raw rabbitmq-c loop alone
    (blacktree_bench_amqp --queue) on n pre-published jobs, the window the
    end-to-end run reaches: what the end-to-end run's broker CPU is held to.
    With `rate` (jobs/s) the loop is paced to it: the broker's cost per job
    falls as its rate rises, so this compares the two at the same rate."""
    q = names()
    prepublish(broker, q["execute-queue"], n)
    exe = args.build_dir / "bench" / "amqp" / "blacktree_bench_amqp"
    cmd = [str(exe), "--queue", q["execute-queue"], "--status-queue", q["status-queue"], "--jobs", str(n),
           "--window", str(args.workers * args.capacity)]
    if rate:
        cmd += ["--rate", f"{rate:.0f}"]
    log(f"\n== broker CPU under the raw loop{' paced' if rate else ''}: MQ_URL={broker.url} {' '.join(cmd)}")
    before = broker.cpu_s()
    t0 = time.monotonic()
    subprocess.run(cmd, env=dict(os.environ, MQ_URL=broker.url), check=True, capture_output=True, timeout=3600)
    took = time.monotonic() - t0
    cpu = broker.cpu_s() - before
    delete_quietly(broker, queues=(q["execute-queue"], q["status-queue"]))
    log(f"  {n} jobs in {took:.1f} s ({n / took:.0f} jobs/s); broker CPU {cpu:.2f} s, {1e6 * cpu / n:.0f} us/job")
    return {"jobs": n, "seconds": took, "broker_cpu_s": cpu}


def run_e2e(args, broker, logdir, n, capacity, tag):
    q = names()
    log(f"\n== end to end [{tag}]: {n} jobs, {args.workers} workers x capacity {capacity}, runner {args.runner}")
    prepublish(broker, q["execute-queue"], n)
    with broker.connection() as conn:
        ch = conn.channel()
        ch.queue_declare(queue=q["status-queue"], durable=True)
        o = start_orchestrator(args, broker, q, logdir, tag)
        t_workers = time.monotonic()
        broker_cpu = broker.cpu_s()
        ws = start_workers(args, o, logdir, tag, [args.runner] if args.runner == "noop" else ["true"], capacity)
        series = []  # (t, statuses)
        rss_max_seen = 0
        deadline = time.monotonic() + args.timeout_s
        while True:
            count = ch.queue_declare(queue=q["status-queue"], durable=True, passive=True).method.message_count
            now = time.monotonic()
            series.append((now, count))
            rss_max_seen = max(rss_max_seen, proc_status(o.pid, "VmRSS"))
            if count >= n:
                break
            if now > deadline:
                raise RuntimeError(f"only {count} of {n} statuses after {args.timeout_s}s")
            if o.proc.poll() is not None:
                raise RuntimeError(f"the orchestrator exited; see {o.log_path}")
            time.sleep(0.1)
        t_end = series[-1][0]
        broker_cpu = broker.cpu_s() - broker_cpu
        hwm = proc_status(o.pid, "VmHWM")
        m = metrics(o)
        o_cpu, _ = proc_cpu(o.pid)
        w_cpu = [proc_cpu(w.pid) for w in ws]
        for w in ws:
            w.stop()
        o.stop()
        ch.queue_delete(queue=q["status-queue"])
        ch.queue_delete(queue=q["execute-queue"])
        ch.queue_delete(queue=q["dead-letter-queue"])
    t_first = next(t for t, c in series if c > 0)
    t_1pct = next(t for t, c in series if c >= n // 100)
    c_1pct = next(c for t, c in series if c >= n // 100)
    r = {
        "tag": tag, "jobs": n, "capacity": capacity,
        "from_workers_start_s": t_end - t_workers,
        "jobs_per_s_total": n / (t_end - t_workers),
        "jobs_per_s_steady": (n - c_1pct) / (t_end - t_1pct),
        "first_status_after_s": t_first - t_workers,
        "orchestrator_vmhwm_kb": hwm, "orchestrator_vmrss_max_kb": rss_max_seen,
        "orchestrator_cpu_s": o_cpu,
        "workers_cpu_s": sum(c[0] for c in w_cpu),
        "children_cpu_s": sum(c[1] for c in w_cpu),
        "broker_cpu_s": broker_cpu,
        "succeeded": m.get("blacktree_jobs_succeeded_total"), "failed": m.get("blacktree_jobs_failed_total"),
        "not_accepted": m.get("blacktree_offers_not_accepted_total"),
    }
    log(json.dumps(r, indent=1))
    return r


def spawn_cost(k=2000):
    """posix_spawn + waitpid of /bin/true from this process, wall and CPU per spawn."""
    true = "/bin/true"
    c0 = os.times()
    t0 = time.monotonic()
    for _ in range(k):
        pid = os.posix_spawn(true, [true], os.environ)
        os.waitpid(pid, 0)
    wall = (time.monotonic() - t0) / k
    c1 = os.times()
    cpu = ((c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) +
           (c1.children_system - c0.children_system)) / k
    return wall, cpu


def run_memory(args, broker, logdir, size):
    out = {}
    for mode in ("idle", "busy"):
        q = names()
        tag = f"mem{size}-{mode}"
        log(f"\n== memory [{tag}]: {size} queued jobs, " +
            ("no worker" if mode == "idle" else f"{args.workers} workers x {args.capacity} running `sleep`"))
        prepublish(broker, q["execute-queue"], size)
        o = start_orchestrator(args, broker, q, logdir, tag)
        ws = []
        if mode == "busy":
            ws = start_workers(args, o, logdir, tag, ["sleep", "300"], args.capacity)
        time.sleep(args.mem_wait_s)
        rss, hwm = proc_status(o.pid, "VmRSS"), proc_status(o.pid, "VmHWM")
        counts = broker.unacked(q["execute-queue"])
        m = metrics(o)
        for w in ws:
            w.stop()
        o.stop()
        with broker.connection() as conn:
            ch = conn.channel()
            for k in ("execute-queue", "status-queue", "dead-letter-queue"):
                ch.queue_delete(queue=q[k])
        r = {"queued": size, "mode": mode, "vmrss_kb": rss, "vmhwm_kb": hwm,
             "ready_unacked": counts, "in_flight": m.get("blacktree_jobs_in_flight"),
             "received": m.get("blacktree_jobs_received_total")}
        log(json.dumps(r))
        out[mode] = r
    return out

# -- phase 0: latency at light load (issue 15) --------------------------------


def percentile(sorted_values, p):
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def exited(proc):
    """(exited, exit status or None) of a child, without reaping it, so that its
    /proc/<pid>/stat (its CPU times) stays readable after it exits."""
    if proc.returncode is not None:
        return True, proc.returncode
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True, None
    if info is None:
        return False, None
    return True, info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


class StatusCollector(threading.Thread):
    """Consumes `queue` (auto-ack) on its own connection, as pika's
    BlockingConnection is not thread-safe, and records time.perf_counter_ns()
    at each status's arrival under key(properties, body): the first arrival
    per job counts, later ones are counted as duplicates."""

    def __init__(self, broker, queue, key):
        super().__init__(name=f"statuses-{queue}", daemon=True)
        self.broker, self.queue, self.key = broker, queue, key
        self.arrivals = {}
        self.duplicates = self.unreadable = 0
        self.error = None
        self.ready = threading.Event()
        self.stopping = threading.Event()

    def run(self):
        try:
            with self.broker.connection() as conn:
                ch = conn.channel()
                ch.basic_consume(queue=self.queue, on_message_callback=self._on_message, auto_ack=True)
                self.ready.set()
                while not self.stopping.is_set():
                    # Returns as soon as a delivery is dispatched, so the
                    # callback runs when the status arrives.
                    conn.process_data_events(time_limit=0.1)
        except Exception as e:  # noqa: BLE001 -- reported by whoever waits on this thread
            self.error = e
            self.ready.set()

    def _on_message(self, _ch, _method, properties, body):
        t = time.perf_counter_ns()
        try:
            job_id = self.key(properties, body)
        except (ValueError, KeyError, TypeError):
            job_id = None
        if job_id is None:
            self.unreadable += 1
        elif job_id in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[job_id] = t

    def count(self):
        return len(self.arrivals)

    def stop(self):
        self.stopping.set()
        self.join(timeout=10)


def publish_on_schedule(ch, queue, ids, interval_ns):
    """One persistent job per id at start + k * interval (an absolute schedule:
    a late publish does not shift the later ones). Returns ({id:
    perf_counter_ns just before its basic_publish}, the most a publish was
    behind its time, in ns)."""
    sent = {}
    behind = 0
    start = time.perf_counter_ns() + interval_ns
    for k, job_id in enumerate(ids):
        body = job_body(k, job_id)
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json", correlation_id=job_id)
        due = start + k * interval_ns
        now = time.perf_counter_ns()
        if due > now:
            time.sleep((due - now) / 1e9)
        t = time.perf_counter_ns()
        ch.basic_publish(exchange="", routing_key=queue, body=body, properties=props)
        sent[job_id] = t
        behind = max(behind, t - due)
    return sent, behind


def delete_quietly(broker, queues=(), exchanges=()):
    try:
        with broker.connection() as conn:
            ch = conn.channel()
            for name in queues:
                ch.queue_delete(queue=name)
            for name in exchanges:
                ch.exchange_delete(exchange=name)
    except Exception as e:  # noqa: BLE001 -- cleanup must not hide the error that got us here
        log(f"  (could not delete {list(queues) + list(exchanges)}: {e})")


def latency_rep(args, broker, logdir, side, rep):
    """One rep of `side` ("baseline": the raw rabbitmq-c loop of
    blacktree_bench_amqp --queue; "system": the orchestrator and workers) on
    fresh queues: the job consumer started and seen consuming, the status
    consumer started, then --latency-jobs published on the schedule."""
    n, window = args.latency_jobs, args.workers * args.capacity
    tag = f"lat{rep + 1}-{side}"
    q = names()
    execute, status = q["execute-queue"], q["status-queue"]
    ids = [f"lat-{execute.rsplit('.', 1)[1]}-{side}-{i}" for i in range(n)]
    if side == "baseline":
        key = lambda props, body: props.correlation_id  # noqa: E731 -- its status body says "x"
    else:
        key = lambda props, body: json.loads(body)["jobId"]  # noqa: E731
    procs, collector, out = [], None, None
    try:
        with broker.connection() as conn:
            ch = conn.channel()
            for name in (execute, status):  # as the orchestrator and the raw loop declare them
                ch.queue_declare(queue=name, durable=True)

            def consumers():
                return ch.queue_declare(queue=execute, durable=True, passive=True).method.consumer_count

            if side == "baseline":
                exe = args.build_dir / "bench" / "amqp" / "blacktree_bench_amqp"
                b = Proc(tag, [str(exe), "--queue", execute, "--status-queue", status, "--jobs", str(n),
                               "--window", str(window)], logdir, env=dict(os.environ, MQ_URL=broker.url))
                procs.append(b)
                wait_until(lambda: exited(b.proc)[0] or consumers() >= 1, 60, f"a consumer on {execute}", 0.02)
                if exited(b.proc)[0]:
                    raise RuntimeError(f"{tag} exited ({exited(b.proc)[1]}) before consuming; see {b.log_path}")
                cpu_pids = {"baseline": b.pid}

                def dead():
                    gone, rc = exited(b.proc)
                    return f"{tag} exited ({rc}); see {b.log_path}" if gone and rc != 0 else None
            else:
                o = start_orchestrator(args, broker, q, logdir, tag)
                procs.append(o)
                ws = start_workers(args, o, logdir, tag, [args.runner] if args.runner == "noop" else ["true"],
                                   args.capacity)
                procs += ws

                def dead():
                    for p in [o] + ws:
                        if p.proc.poll() is not None:
                            return f"{p.name} exited ({p.proc.returncode}); see {p.log_path}"
                    return None

                # Every slot registered and the orchestrator consuming (its
                # prefetch follows the free slots, so it re-subscribes as
                # workers register).
                def slots():
                    try:
                        return metrics(o).get("blacktree_worker_slots", 0)
                    except OSError:  # /metrics not served yet
                        return 0

                wait_until(lambda: dead() or (slots() >= window and consumers() >= 1), 60,
                           f"{window} worker slots on {o.name}'s /metrics and a consumer on {execute}", 0.05)
                if dead():
                    raise RuntimeError(dead())
                cpu_pids = {"orchestrator": o.pid, **{w.name: w.pid for w in ws}}

            collector = StatusCollector(broker, status, key)
            collector.start()
            if not collector.ready.wait(30) or collector.error:
                raise RuntimeError(f"{tag}: cannot consume {status}: {collector.error or 'timed out'}")

            # CPU while idle, to tell the per-job cost from the cost of being up.
            idle0 = {k: proc_cpu(pid)[0] for k, pid in cpu_pids.items()}
            t_idle = time.monotonic()
            time.sleep(1.0)
            cpu0 = {k: proc_cpu(pid)[0] for k, pid in cpu_pids.items()}
            sw0 = {k: proc_switches(pid) for k, pid in cpu_pids.items()}
            idle_s = time.monotonic() - t_idle
            t_wall0 = time.time_ns() - time.perf_counter_ns()  # perf_counter_ns -> wall-clock ns, for the logs
            sent, behind = publish_on_schedule(ch, execute, ids, round(args.latency_interval_ms * 1e6))
            deadline = time.monotonic() + args.latency_timeout_s
            while collector.count() < n and time.monotonic() < deadline and not collector.error and not dead():
                time.sleep(0.01)
            cpu1 = {k: proc_cpu(pid)[0] for k, pid in cpu_pids.items()}
            sw = {k: proc_switches(pid) - sw0[k] for k, pid in cpu_pids.items()}
            if collector.count() < n:
                missing = [i for i in ids if i not in collector.arrivals]
                why = collector.error or dead() or f"{args.latency_timeout_s}s after the last publish"
                extra = ""
                if side == "system":
                    m = metrics(o)
                    extra = "; orchestrator: " + ", ".join(
                        f"{k.removeprefix('blacktree_')} {m.get(k)}" for k in (
                            "blacktree_jobs_received_total", "blacktree_jobs_succeeded_total",
                            "blacktree_jobs_failed_total", "blacktree_jobs_in_flight", "blacktree_worker_slots"))
                left = ch.queue_declare(queue=execute, durable=True, passive=True).method.message_count
                raise RuntimeError(
                    f"latency {tag}: {len(missing)} of {n} statuses missing ({why}): "
                    f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; {left} jobs still ready in {execute}; "
                    f"{collector.duplicates} duplicate and {collector.unreadable} unreadable statuses{extra}")
            if side == "system":
                m = metrics(o)
                if m.get("blacktree_jobs_failed_total"):
                    log(f"  note: {tag}: {m['blacktree_jobs_failed_total']:.0f} jobs reported failed")
    finally:
        if collector:
            collector.stop()
        for p in reversed(procs):  # workers before the orchestrator
            p.stop()
        delete_quietly(broker, (execute, status, q["dead-letter-queue"]),
                       (q["events-exchange"], q["dead-letter-exchange"]))

    if side == "baseline":
        rc = procs[0].proc.returncode
        text = procs[0].log_path.read_text(errors="replace")
        if rc != 0 or "raw loop:" not in text:
            raise RuntimeError(f"{tag} exited {rc} without its summary line; see {procs[0].log_path}")
    lat = sorted((collector.arrivals[i] - sent[i]) / 1e6 for i in ids[args.latency_warmup:])
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    idle = {k: (cpu0[k] - idle0[k]) / idle_s for k in cpu0}  # CPU s per s
    own = cpu["baseline"] if side == "baseline" else cpu["orchestrator"]
    # Per job, in wall-clock ns, to set against the services' log timestamps.
    (Path(logdir) / f"{tag}.json").write_text(json.dumps(
        {i: [sent[i] + t_wall0, collector.arrivals[i] + t_wall0] for i in ids}))
    out = {"side": side, "rep": rep + 1, "counted": len(lat),
           "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90), "p99_ms": percentile(lat, 99),
           "max_ms": lat[-1], "mean_ms": statistics.fmean(lat), "min_ms": lat[0],
           "publish_behind_max_ms": behind / 1e6, "duplicates": collector.duplicates,
           "cpu_us_per_job": 1e6 * own / n,
           "idle_cpu_ms_per_s": 1e3 * (idle["baseline"] if side == "baseline" else idle["orchestrator"]),
           "switches_per_job": (sw["baseline"] if side == "baseline" else sw["orchestrator"]) / n}
    if side == "system":
        out["workers_cpu_us_per_job"] = 1e6 * sum(v for k, v in cpu.items() if k != "orchestrator") / n
        out["workers_idle_cpu_ms_per_s"] = 1e3 * sum(v for k, v in idle.items() if k != "orchestrator")
        out["workers_switches_per_job"] = sum(v for k, v in sw.items() if k != "orchestrator") / n
    log(f"  rep {rep + 1} {side:8}: p50 {out['p50_ms']:.3f}  p90 {out['p90_ms']:.3f}  p99 {out['p99_ms']:.3f}  "
        f"max {out['max_ms']:.3f} ms ({len(lat)} jobs); {'raw loop' if side == 'baseline' else 'orchestrator'} "
        f"CPU {out['cpu_us_per_job']:.0f} us/job ({out['idle_cpu_ms_per_s']:.0f} ms/s idle), "
        f"{out['switches_per_job']:.1f} context switches/job" +
        (f"; workers {out['workers_cpu_us_per_job']:.0f} us/job ({out['workers_idle_cpu_ms_per_s']:.0f} ms/s "
         f"idle), {out['workers_switches_per_job']:.1f} switches/job" if side == "system" else "") +
        f"; publisher at most {out['publish_behind_max_ms']:.2f} ms behind schedule")
    return out


LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "cpu_us_per_job", "idle_cpu_ms_per_s", "switches_per_job")


def run_latency(args, broker, logdir):
    n, window = args.latency_jobs, args.workers * args.capacity
    if not 0 <= args.latency_warmup < n:
        raise SystemExit("--latency-warmup must be at least 0 and less than --latency-jobs")
    exe = args.build_dir / "bench" / "amqp" / "blacktree_bench_amqp"
    for path in (exe, args.bin_dir / "blacktree-orchestrator", args.bin_dir / "blacktree-worker"):
        if not path.exists():
            raise RuntimeError(f"{path} is missing: build it first")
    log(f"\n== latency at light load: {n} jobs, one every {args.latency_interval_ms:g} ms, the first "
        f"{args.latency_warmup} of each rep not counted; {args.latency_reps} interleaved reps of the baseline "
        f"({exe.name} --queue, window {window}) and the system ({args.workers} workers x capacity "
        f"{args.capacity}, runner {args.runner})")
    reps = {"baseline": [], "system": []}
    for rep in range(args.latency_reps):
        for side in ("baseline", "system"):
            reps[side].append(latency_rep(args, broker, logdir, side, rep))
    median = {side: {k: statistics.median(r[k] for r in rs) for k in LATENCY_KEYS} for side, rs in reps.items()}
    for k in ("workers_cpu_us_per_job", "workers_idle_cpu_ms_per_s", "workers_switches_per_job"):
        median["system"][k] = statistics.median(r[k] for r in reps["system"])
    b, s = median["baseline"], median["system"]
    return {"jobs": n, "interval_ms": args.latency_interval_ms, "warmup": args.latency_warmup,
            "reps": args.latency_reps, "window": window, "runner": args.runner, "per_rep": reps, "median": median,
            "ratio_p50": s["p50_ms"] / b["p50_ms"], "ratio_p99": s["p99_ms"] / b["p99_ms"],
            "target_p50_met": s["p50_ms"] <= 2.0, "target_p99_met": s["p99_ms"] <= 5.0}


def latency_table(lat):
    b, s = lat["median"]["baseline"], lat["median"]["system"]
    lines = [f"latency at light load, publish to status arrival: {lat['jobs']} jobs one every "
             f"{lat['interval_ms']:g} ms, first {lat['warmup']} not counted, median of {lat['reps']} interleaved "
             f"reps (ms; CPU per job over the rep, idle time included; idle CPU over 1 s before it):",
             f"  {'':26} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}   CPU us/job, context switches/job"]
    for name, r, cpu in (("raw rabbitmq-c loop", b, f"{b['cpu_us_per_job']:.0f}, {b['switches_per_job']:.1f} "
                                                    f"(the loop; {b['idle_cpu_ms_per_s']:.0f} ms/s idle)"),
                         ("orchestrator + workers", s, f"{s['cpu_us_per_job']:.0f}, {s['switches_per_job']:.1f} "
                                                       f"orchestrator; {s['workers_cpu_us_per_job']:.0f}, "
                                                       f"{s['workers_switches_per_job']:.1f} workers (idle: "
                                                       f"{s['idle_cpu_ms_per_s']:.0f}, "
                                                       f"{s['workers_idle_cpu_ms_per_s']:.0f} ms/s)")):
        lines.append(f"  {name:26} {r['p50_ms']:8.3f} {r['p90_ms']:8.3f} {r['p99_ms']:8.3f} {r['max_ms']:8.3f}   {cpu}")
    lines.append(f"  {'system / baseline':26} {lat['ratio_p50']:7.2f}x {'':8} {lat['ratio_p99']:7.2f}x")
    lines.append(f"  targets: p50 <= 2 ms: {'met' if lat['target_p50_met'] else 'MISSED'} ({s['p50_ms']:.3f}); "
                 f"p99 <= 5 ms: {'met' if lat['target_p99_met'] else 'MISSED'} ({s['p99_ms']:.3f})")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=50000)
    ap.add_argument("--runner", choices=["noop", "true"], default="noop",
                    help="the workers' runner: noop (--runner noop) or `true` through the argv runner")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--extra-capacity", type=int, default=0,
                    help="also run end to end with this capacity per worker (0: skip)")
    ap.add_argument("--extra-jobs", type=int, default=0, help="jobs for the --extra-capacity run (default --jobs)")
    ap.add_argument("--mem-sizes", default="10000,100000")
    ap.add_argument("--mem-wait-s", type=float, default=10.0)
    ap.add_argument("--build-dir", type=Path, default=REPO / "build-bench")
    ap.add_argument("--timeout-s", type=float, default=1800)
    ap.add_argument("--latency-jobs", type=int, default=500, help="jobs per latency rep")
    ap.add_argument("--latency-interval-ms", type=float, default=20.0, help="one job every this many ms")
    ap.add_argument("--latency-reps", type=int, default=3, help="latency reps of each side, interleaved")
    ap.add_argument("--latency-warmup", type=int, default=20, help="first jobs of each latency rep not counted")
    ap.add_argument("--latency-timeout-s", type=float, default=30.0,
                    help="how long after its last publish a latency rep waits for its statuses")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    args.bin_dir = args.build_dir / "services"

    work = Path(tempfile.mkdtemp(prefix="blacktree-bench-e2e-"))
    log(f"work dir {work} (logs); {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; "
        f"load {os.getloadavg()}; {os.cpu_count()} CPUs")
    broker = Broker(work / "rabbitmq")
    summary = {}
    try:
        wall, cpu = spawn_cost()
        summary["spawn_true"] = {"wall_ms": wall * 1e3, "cpu_ms": cpu * 1e3}
        log(f"posix_spawn+waitpid of /bin/true from python: {wall * 1e3:.2f} ms wall, {cpu * 1e3:.2f} ms CPU each")
        if not args.skip_latency:
            summary["latency"] = run_latency(args, broker, work)
        if not args.skip_baseline:
            raw, ours = run_baseline(args, broker)
            summary["raw_loop_jobs_per_s"], summary["inprocess_blacktree_jobs_per_s"] = raw, ours
        if not args.skip_e2e:
            summary["e2e"] = run_e2e(args, broker, work, args.jobs, args.capacity, "e2e")
            if args.extra_capacity:
                summary["e2e_extra"] = run_e2e(args, broker, work, args.extra_jobs or args.jobs,
                                               args.extra_capacity, f"e2e-cap{args.extra_capacity}")
            if not args.skip_baseline:
                summary["raw_broker"] = run_raw_broker_cpu(args, broker, args.jobs)
                summary["raw_broker_same_rate"] = run_raw_broker_cpu(args, broker, args.jobs,
                                                                     rate=summary["e2e"]["jobs_per_s_total"])
                # Again after the end-to-end runs: on a shared machine the load moves
                # between phases, so the ratio uses the mean of the two.
                raw2, ours2 = run_baseline(args, broker)
                summary["raw_loop_jobs_per_s_runs"] = [summary["raw_loop_jobs_per_s"], raw2]
                summary["inprocess_blacktree_jobs_per_s_runs"] = [summary["inprocess_blacktree_jobs_per_s"], ours2]
                summary["raw_loop_jobs_per_s"] = (summary["raw_loop_jobs_per_s"] + raw2) / 2
        if not args.skip_memory:
            summary["memory"] = {s: run_memory(args, broker, work, int(s)) for s in args.mem_sizes.split(",")}
    finally:
        broker.stop()
        log(f"load at the end {os.getloadavg()}")

    log("\n== summary")
    if "latency" in summary:
        log(latency_table(summary["latency"]))
    raw = summary.get("raw_loop_jobs_per_s")
    if "raw_loop_jobs_per_s_runs" in summary:
        log(f"raw rabbitmq-c loop before / after the end-to-end runs: {summary['raw_loop_jobs_per_s_runs']} jobs/s "
            f"(mean {raw:.0f}); in-process AMQP source + Dispatcher + sink: "
            f"{summary['inprocess_blacktree_jobs_per_s_runs']} jobs/s")
    for key in ("e2e", "e2e_extra"):
        r = summary.get(key)
        if not r:
            continue
        line = (f"{r['tag']}: {r['jobs']} jobs, {args.workers}x{r['capacity']}: "
                f"{r['jobs_per_s_total']:.0f} jobs/s from worker start ({r['from_workers_start_s']:.1f}s), "
                f"{r['jobs_per_s_steady']:.0f} jobs/s after the first 1%; orchestrator VmHWM "
                f"{r['orchestrator_vmhwm_kb'] / 1024:.1f} MiB")
        if raw:
            ratio = r["jobs_per_s_total"] / raw
            line += (f"; raw loop {raw:.0f} jobs/s; ratio {ratio:.2f} (steady {r['jobs_per_s_steady'] / raw:.2f}) "
                     f"target >= 0.8: {'PASS' if ratio >= 0.8 else 'MISS'}")
        cpu_total = r["orchestrator_cpu_s"] + r["workers_cpu_s"] + r["children_cpu_s"]
        line += (f"\n  CPU s: orchestrator {r['orchestrator_cpu_s']:.1f}, workers {r['workers_cpu_s']:.1f}, "
                 f"`true` children {r['children_cpu_s']:.1f} ({100 * r['children_cpu_s'] / cpu_total:.0f}% of "
                 f"these); per job: orchestrator {1e6 * r['orchestrator_cpu_s'] / r['jobs']:.0f} us, workers+children "
                 f"{1e6 * (r['workers_cpu_s'] + r['children_cpu_s']) / r['jobs']:.0f} us")
        broker_per_job = 1e6 * r["broker_cpu_s"] / r["jobs"]
        line += f"\n  broker CPU per job: {broker_per_job:.0f} us"
        raw_broker = summary.get("raw_broker")
        if raw_broker:
            raw_per_job = 1e6 * raw_broker["broker_cpu_s"] / raw_broker["jobs"]
            ratio = broker_per_job / raw_per_job
            line += (f" against {raw_per_job:.0f} us under the raw loop: {ratio:.2f}x, target <= 1.3: "
                     f"{'PASS' if ratio <= 1.3 else 'MISS'}")
        paced = summary.get("raw_broker_same_rate") if key == "e2e" else None
        if paced:
            paced_per_job = 1e6 * paced["broker_cpu_s"] / paced["jobs"]
            line += (f"\n  at the same rate (the raw loop paced to {paced['jobs'] / paced['seconds']:.0f} jobs/s): "
                     f"{paced_per_job:.0f} us, {broker_per_job / paced_per_job:.2f}x")
        log(line)
    mem = summary.get("memory")
    if mem and len(mem) >= 2:
        sizes = sorted(mem, key=int)
        small, large = mem[sizes[0]], mem[sizes[-1]]
        for mode in ("idle", "busy"):
            a, b = small[mode]["vmrss_kb"], large[mode]["vmrss_kb"]
            log(f"memory [{mode}]: VmRSS {a / 1024:.1f} MiB with {sizes[0]} queued, {b / 1024:.1f} MiB with "
                f"{sizes[-1]}: ratio {b / a:.3f} target <= 1.10: {'PASS' if b / a <= 1.10 else 'MISS'} "
                f"(VmHWM {small[mode]['vmhwm_kb'] / 1024:.1f} / {large[mode]['vmhwm_kb'] / 1024:.1f} MiB)")
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"summary written to {work / 'summary.json'}")


if __name__ == "__main__":
    main()
