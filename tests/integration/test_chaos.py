# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 12: delivery under faults, all at once. 1,000 jobs that sleep 50-500 ms
run on 4 workers (argv runner) while the test kills workers (kill -9, started
again with the same id), kills the orchestrator twice, closes the
orchestrator's broker connections and restarts the broker. Then: every job id
has a status, no job ran twice at the same time (the runner logs every start
and end), every duplicate status carries the statusId of its original, and
nothing is left unacked. Against a classic and a quorum execute.queue."""

import collections
import json
import subprocess
import time

import pytest

from conftest import job, wait_until
from test_amqp_e2e import RABBITMQ_SH, StatusCollector, amqp_flags, broker, names, publish  # noqa: F401

JOBS = 1000
WORKERS = 4

# Sleeps 50-500 ms (from the job's number), logging start and end with a
# timestamp; a cancelled run (SIGTERM) logs its end too. `sleep & wait`, so
# the trap runs at once. The log's path is $0 (jobs get no environment of ours).
RUNNER = r"""
n=${BLACKTREE_JOB_ID##*-}; n=${n#0}; n=${n#0}; n=${n#0}
ms=$((50 + n * 37 % 451))
# $EPOCHREALTIME, not $(date): a kill that lands inside a command
# substitution would leave a line without its time.
log() { echo "$1 $BLACKTREE_JOB_ID $EPOCHREALTIME $$" >> "$0"; }
trap 'log end; exit 143' TERM
log start
sleep "$(printf '0.%03d' "$ms")" & wait $!
log end
echo "slept $ms ms"
"""


def ctl(broker, *args):
    subprocess.run(["bash", str(RABBITMQ_SH), "ctl", str(broker.dir), *args], check=True, timeout=60,
                   capture_output=True)


def overlapping_runs(log_text, reaped_at=()):
    """Job ids with two runs whose [start, end] intervals overlap. A run killed
    with SIGKILL logs no end: `reaped_at` are the times (time.time()) by which
    the processes of killed workers' jobs were gone (a worker ends what its
    predecessor left before it serves), and such a run ends at the first one
    after its start; without one it never ends."""
    runs = collections.defaultdict(dict)  # job id -> pid -> [start, end]
    for line in log_text.splitlines():
        what, job_id, stamp, pid = line.split()
        runs[job_id].setdefault(pid, [None, float("inf")])[0 if what == "start" else 1] = float(stamp)
    for by_pid in runs.values():
        for span in by_pid.values():
            if span[0] is not None and span[1] == float("inf"):
                span[1] = min((t for t in reaped_at if t >= span[0]), default=float("inf"))
    overlaps = []
    for job_id, by_pid in runs.items():
        spans = sorted(span for span in by_pid.values() if span[0] is not None)
        if any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])):
            overlaps.append(job_id)
    return overlaps


@pytest.mark.timeout(300)
@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_chaos(cluster, tmp_path, broker, names, queue_type):  # noqa: F811
    log = tmp_path / "runs.log"
    queue_args = {"x-queue-type": queue_type}
    publish(broker, names["execute-queue"], [], arguments=queue_args)  # declared before the orchestrator does
    flags = amqp_flags(broker, names)
    debug = ("--log-level", "debug")  # each job's received, status retries and settled lines, for a failure
    orch = cluster.orchestrator(amqp=flags, extra=debug)
    port = orch.port

    command = ["bash", "-c", RUNNER, str(log)]
    workers = [cluster.worker(orch, f"chaos-w{i}", command=command, capacity=4) for i in range(WORKERS)]
    orch.wait_workers(lambda ws: len(ws) == WORKERS and all(w.state == 2 for w in ws.values()),
                      what=f"{WORKERS} free workers")
    statuses = StatusCollector(broker, names["status-queue"])
    try:
        ids = [f"chaos-{i:04d}" for i in range(JOBS)]
        publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids], arguments=queue_args)

        def done():
            return len(statuses.ids())

        def after(n, what):
            wait_until(lambda: done() >= n, timeout=60, what=what)

        restarts = 0
        reaped_at = []  # when a killed worker's job processes were gone

        def restart_worker(i):
            nonlocal restarts
            restarts += 1
            workers[i].kill9()
            workers[i] = cluster.worker(orch, f"chaos-w{i}", command=command, capacity=4,
                                        port=workers[i].port, name=f"chaos-w{i}-{restarts}")
            reaped_at.append(time.time())  # serving: it ended its predecessor's leftovers first

        after(100, "100 statuses")
        restart_worker(0)
        after(200, "200 statuses")
        orch.kill9()
        orch = cluster.orchestrator(amqp=flags, port=port, name="orchestrator-2", extra=debug)
        after(350, "350 statuses")
        ctl(broker, "close_all_connections", "chaos test")
        restart_worker(1)
        after(500, "500 statuses")
        broker.stop()
        broker.start()
        after(650, "650 statuses")
        orch.kill9()
        orch = cluster.orchestrator(amqp=flags, port=port, name="orchestrator-3", extra=debug)
        restart_worker(2)

        try:
            statuses.wait_all(ids, timeout=200)
        except AssertionError:  # say what is missing and where it was last seen, for the next person
            missing = sorted(set(ids) - set(statuses.ids()))
            queues = {q: (broker.count(names[q], "messages_ready"), broker.unacked(names[q]))
                      for q in ("execute-queue", "status-queue")}
            print(f"chaos ({queue_type}): no status for {len(missing)} jobs, e.g. {missing[:10]}; "
                  f"(ready, unacked) messages: {queues}; statuses received: {sum(statuses.ids().values())}")
            # Lost, or carried under another job's id? The jobs with more than
            # one status, with the status and worker ids of each.
            for job_id, got in sorted(statuses.by_job().items()):
                if len(got) > 1:
                    print(f"  {job_id}: {len(got)} statuses:",
                          [(s.get("statusId"), s.get("workerId"), s.get("success")) for s in got])
            unknown = sorted(set(statuses.ids()) - set(ids))
            if unknown:
                print(f"  statuses for job ids never published: {unknown[:20]}")
            for job_id in missing[:5]:
                for path in sorted(tmp_path.glob("*.log")):
                    lines = [line for line in path.read_text().splitlines() if job_id in line]
                    if lines:
                        print(f"{path.name}:", *lines, sep="\n  ")
            # What the orchestrators warned of that names no job: a sink's
            # returned or refused statuses, lost connections.
            for path in sorted(tmp_path.glob("orchestrator*.log")):
                lines = [line for line in path.read_text().splitlines()
                         if (" warning " in line or " error " in line) and "job chaos-" not in line]
                if lines:
                    print(f"{path.name} (warnings and errors):", *lines[:40], sep="\n  ")
            raise
        # Settled: nothing waits unacked, nothing is left to run.
        wait_until(lambda: broker.unacked(names["execute-queue"]) == 0, timeout=30, what="nothing unacked")
    finally:
        statuses.close()

    with statuses.lock:
        received = list(statuses.statuses)
    # Every check, so one run tells all that is wrong.
    problems = []
    missing = set(ids) - {s["jobId"] for s in received}
    if missing:
        problems.append(f"{len(missing)} jobs without a status, e.g. {sorted(missing)[:5]}")
    without_id = [s["jobId"] for s in received if not s.get("statusId")]
    if without_id:
        problems.append(f"{len(without_id)} statuses without a statusId, e.g. {without_id[:5]}")
    # Copies of one run's status (same job, worker and start) share its statusId.
    by_run = collections.defaultdict(set)
    for s in received:
        by_run[(s["jobId"], s.get("workerId"), s.get("startedAt"))].add(s.get("statusId"))
    split = {k: v for k, v in by_run.items() if len(v) > 1}
    if split:
        problems.append(f"{len(split)} runs whose copies carry different statusIds, e.g. {list(split.items())[:3]}")
    overlaps = overlapping_runs(log.read_text(), reaped_at)
    if overlaps:
        problems.append(f"{len(overlaps)} jobs ran twice at the same time: {overlaps[:10]}")
    print(f"chaos ({queue_type}): {len(received)} statuses for {JOBS} jobs, "
          f"{sum(1 for s in received if not s['success'])} failed")
    assert not problems, "\n".join(problems)
