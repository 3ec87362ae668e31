#!/usr/bin/python3
# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Failover benchmark (issue 13), not part of ctest:

    /usr/bin/python3 bench/e2e/failover.py [--jobs 20000] [--workers 4] [--capacity 4]
        [--reps 3] [--build-dir build-bench]

On one private broker (tests/support/rabbitmq.sh), with the workers' no-op runner:
 1. throughput: `jobs` persistent jobs through one orchestrator, then through
    two orchestrators sharing the queue (the workers split between them, each
    with both addresses), interleaved, `reps` times each; jobs/s from the
    workers' start to the last status, and the ratio two/one per pair.
 2. failover: two orchestrators, the workers split, a steady stream of jobs;
    one orchestrator is killed (-9). Measured from the kill: until every
    worker of the killed one is live on the other (its ListWorkers), and until
    the first status from one of those workers that ran a job the survivor
    gave it (not one it carried). Median of `reps` kills.
"""

import argparse
import collections
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as e2e  # noqa: E402  (the end-to-end benchmark's broker and process helpers)

REPO = e2e.REPO
sys.path.insert(0, str(REPO / "tests" / "integration"))


def list_workers(args, port):
    """{worker id: state} from an orchestrator's ListWorkers (insecure, no token)."""
    import grpc
    sys.path.insert(0, str(args.build_dir / "tests" / "integration" / "py"))
    from blacktree.v1 import blacktree_pb2 as pb
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/blacktree.v1.Orchestrator/ListWorkers",
                              request_serializer=pb.ListWorkersRequest.SerializeToString,
                              response_deserializer=pb.ListWorkersReply.FromString)
        return {w.worker.id: w.state for w in call(pb.ListWorkersRequest(), timeout=5).workers}


def start_orchestrator(args, broker, q, logdir, tag):
    o = e2e.start_orchestrator(args, broker, q, logdir, tag)
    e2e.wait_until(lambda: "serving /healthz" in o.log_path.read_text(errors="replace"), 60, f"{tag} ready")
    return o


def start_workers(args, orchs, logdir, tag):
    """args.workers no-op workers, alternating which orchestrator comes first."""
    ws = []
    for i in range(args.workers):
        first, *rest = orchs[i % len(orchs):] + orchs[:i % len(orchs)]
        addresses = ",".join(f"127.0.0.1:{o.port}" for o in [first, *rest])
        argv = [str(args.bin_dir / "blacktree-worker"), "--orchestrator-addr", addresses,
                "--listen", f"127.0.0.1:{e2e.free_port()}", "--worker-id", f"{tag}-w{i}", "--drain-timeout-s", "2",
                "--capacity", str(args.capacity), "--runner", "noop", "--insecure"]
        w = e2e.Proc(f"{tag}-w{i}", argv, logdir, wait_text="serving on port")
        w.worker_id, w.first = f"{tag}-w{i}", first
        ws.append(w)
    return ws


def throughput(args, broker, logdir, n_orchs, tag):
    q = e2e.names()
    e2e.prepublish(broker, q["execute-queue"], args.jobs)
    with broker.connection() as conn:
        ch = conn.channel()
        ch.queue_declare(queue=q["status-queue"], durable=True)
        orchs = [start_orchestrator(args, broker, q, logdir, f"{tag}-o{i}") for i in range(n_orchs)]
        t0 = time.monotonic()
        ws = start_workers(args, orchs, logdir, tag)
        e2e.wait_until(lambda: ch.queue_declare(queue=q["status-queue"], durable=True,
                                                passive=True).method.message_count >= args.jobs,
                       args.timeout_s, f"{args.jobs} statuses", interval=0.1)
        rate = args.jobs / (time.monotonic() - t0)
        for p in ws + orchs:
            p.stop()
        for name in ("status-queue", "execute-queue", "dead-letter-queue"):
            ch.queue_delete(queue=q[name])
    e2e.log(f"  {tag}: {n_orchs} orchestrator(s): {rate:.0f} jobs/s")
    return rate


class Statuses:
    """Reads a status queue in the background: (arrival time, status) pairs."""

    def __init__(self, broker, queue):
        self.items, self.lock, self.stop_flag = [], threading.Lock(), threading.Event()
        self.broker, self.queue = broker, queue
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        with self.broker.connection() as conn:
            ch = conn.channel()
            ch.queue_declare(queue=self.queue, durable=True)
            for method, _, body in ch.consume(self.queue, auto_ack=True, inactivity_timeout=0.1):
                if self.stop_flag.is_set():
                    break
                if method is not None:
                    with self.lock:
                        self.items.append((time.monotonic(), json.loads(body)))

    def close(self):
        self.stop_flag.set()
        self.thread.join(timeout=10)


def failover(args, broker, logdir, tag):
    q = e2e.names()
    # Enough jobs for the whole measurement; the queue is deleted at the end.
    e2e.prepublish(broker, q["execute-queue"], args.jobs)
    statuses = Statuses(broker, q["status-queue"])
    orchs = [start_orchestrator(args, broker, q, logdir, f"{tag}-o{i}") for i in range(2)]
    ws = start_workers(args, orchs, logdir, tag)
    try:
        e2e.wait_until(lambda: len(statuses.items) >= args.jobs // 10, args.timeout_s, "jobs flowing")
        victim, survivor = orchs
        moved = {w.worker_id for w in ws if w.first is victim}
        t_kill = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)

        def all_live():
            try:
                states = list_workers(args, survivor.port)
            except Exception:  # noqa: BLE001 (busy: ask again)
                return False
            return all(states.get(w) in (2, 3) for w in moved)  # free or busy

        e2e.wait_until(all_live, 60, "the killed orchestrator's workers live on the survivor")
        t_live = time.monotonic()

        def new_job_done():
            with statuses.lock:
                return any(t > t_live and s.get("workerId") in moved and not s.get("redelivered")
                           for t, s in statuses.items)

        e2e.wait_until(new_job_done, 60, "a new job done by a moved worker")
        t_new = time.monotonic()
    finally:
        statuses.close()
        for p in ws + orchs:
            p.stop()
        with broker.connection() as conn:
            ch = conn.channel()
            for name in ("status-queue", "execute-queue", "dead-letter-queue"):
                ch.queue_delete(queue=q[name])
    r = {"workers_live_s": t_live - t_kill, "new_jobs_running_s": t_new - t_kill}
    e2e.log(f"  {tag}: {json.dumps(r)}")
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--build-dir", type=Path, default=REPO / "build-bench")
    ap.add_argument("--timeout-s", type=float, default=1800)
    args = ap.parse_args()
    args.bin_dir = args.build_dir / "services"
    logdir = Path(tempfile.mkdtemp(prefix="blacktree-failover-"))
    broker = e2e.Broker(logdir / "rabbitmq")
    try:
        e2e.log(f"== throughput: {args.jobs} jobs, {args.workers} workers x {args.capacity}, no-op runner")
        pairs = []
        for rep in range(args.reps):
            one = throughput(args, broker, logdir, 1, f"one-{rep}")
            two = throughput(args, broker, logdir, 2, f"two-{rep}")
            pairs.append((one, two, two / one))
        e2e.log(f"  median jobs/s: one {statistics.median(p[0] for p in pairs):.0f}, "
                f"two {statistics.median(p[1] for p in pairs):.0f}, "
                f"ratio two/one {statistics.median(p[2] for p in pairs):.2f}")
        e2e.log(f"\n== failover: kill -9 one of two orchestrators, {args.reps} times")
        runs = [failover(args, broker, logdir, f"kill-{rep}") for rep in range(args.reps)]
        summary = collections.OrderedDict(
            (k, statistics.median(r[k] for r in runs)) for k in ("workers_live_s", "new_jobs_running_s"))
        e2e.log(f"  median: {json.dumps(summary)}")
    finally:
        broker.stop()
        e2e.log(f"logs: {logdir}")


if __name__ == "__main__":
    main()
