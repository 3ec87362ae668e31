#!/usr/bin/python3
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""End-to-end benchmark (issue 4): RabbitMQ -> blacktree-orchestrator -> gRPC ->
blacktree-worker processes, against the raw rabbitmq-c loop of bench/amqp on
the same broker in the same run. Not part of ctest.

    /usr/bin/python3 bench/e2e/run.py [--jobs 50000] [--workers 4] [--capacity 4]
        [--extra-capacity 16] [--mem-sizes 10000,100000] [--mem-wait-s 10]
        [--build-dir build-bench] [--skip-baseline] [--skip-memory]

Phases, all against one private broker (tests/support/rabbitmq.sh):
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
import os
import signal
import socket
import subprocess
import sys
import tempfile
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

    def unacked(self, queue):
        out = subprocess.run(["bash", str(RABBITMQ_SH), "ctl", str(self.dir), "list_queues", "-q", "name",
                              "messages_ready", "messages_unacknowledged"], check=True, timeout=120,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == queue:
                return int(parts[1]), int(parts[2])
        return None


def job_body(i):
    # tests/integration/conftest.py job(): the seed's JobRequest fields.
    return json.dumps({"jobId": f"e2e-{i}", "repoUrl": "example/app", "branch": "main",
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
    def __init__(self, name, argv, logdir, wait_text=None):
        self.name = name
        self.log_path = Path(logdir) / f"{name}.log"
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=self.log_file)
        if wait_text:
            wait_until(lambda: wait_text in self.log_path.read_text(errors="replace") or self.proc.poll() is not None,
                       60, f"'{wait_text}' in {name}'s log")
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
    for i in range(args.workers):
        argv = [str(args.bin_dir / "blacktree-worker"), "--orchestrator-addr", f"127.0.0.1:{orchestrator.port}",
                "--listen", f"127.0.0.1:{free_port()}", "--worker-id", f"{tag}-w{i}", "--drain-timeout-s", "2",
                "--capacity", str(capacity), "--insecure"]
        argv += ["--runner", "noop"] if command == ["noop"] else ["--runner", "argv", "--", *command]
        ws.append(Proc(f"{tag}-w{i}", argv, logdir, wait_text="serving on port"))
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
        if "raw rabbitmq-c loop" in line and "jobs/s" in line and not line.startswith("rep"):
            raw = float(line.split()[-2])
        if "blacktree source+sink" in line:
            ours = float(line.split("jobs/s")[0].split()[-1])
    return raw, ours


def run_e2e(args, broker, logdir, n, capacity, tag):
    q = names()
    log(f"\n== end to end [{tag}]: {n} jobs, {args.workers} workers x capacity {capacity}, runner {args.runner}")
    prepublish(broker, q["execute-queue"], n)
    with broker.connection() as conn:
        ch = conn.channel()
        ch.queue_declare(queue=q["status-queue"], durable=True)
        o = start_orchestrator(args, broker, q, logdir, tag)
        t_workers = time.monotonic()
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
        if not args.skip_baseline:
            raw, ours = run_baseline(args, broker)
            summary["raw_loop_jobs_per_s"], summary["inprocess_blacktree_jobs_per_s"] = raw, ours
        if not args.skip_e2e:
            summary["e2e"] = run_e2e(args, broker, work, args.jobs, args.capacity, "e2e")
            if args.extra_capacity:
                summary["e2e_extra"] = run_e2e(args, broker, work, args.extra_jobs or args.jobs,
                                               args.extra_capacity, f"e2e-cap{args.extra_capacity}")
            if not args.skip_baseline:
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
