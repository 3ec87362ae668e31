# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 13: builds outlive their orchestrator. A worker keeps running a job
whose orchestrator went away (kill -9, a stop, a failover), keeps its result,
and reports both when it registers again; the orchestrator that gets the job's
redelivery attaches to that run instead of starting another. Real processes
on a real rabbitmq-server; the jobs are shell scripts run by the argv runner
that log every start and end, so a second run of a job cannot hide."""

import collections
import json
import re
import signal
import time

import pytest

from conftest import job, wait_until
from test_amqp_e2e import StatusCollector, amqp_flags, broker, names, publish  # noqa: F401
from test_chaos import overlapping_runs

# Sleeps $1 seconds (or, with $1 = "id", 50-500 ms from the job's number;
# with "id-long", 1-3 s), logging start and end; a stopped run (SIGTERM) logs
# its end too. The log's path is $0 (jobs get no environment of ours).
RUNNER = r"""
log() { echo "$1 $BLACKTREE_JOB_ID $EPOCHREALTIME $$" >> "$0"; }
trap 'log end; exit 143' TERM
n=${BLACKTREE_JOB_ID##*-}; n=${n#0}; n=${n#0}; n=${n#0}
case "$1" in
  id) ms=$((50 + n * 37 % 451)) ;;
  id-long) ms=$((1000 + n * 37 % 2001)) ;;
  *) ms=$(($1 * 1000)) ;;
esac
secs=$((ms / 1000)).$(printf '%03d' $((ms % 1000)))
log start
sleep "$secs" & wait $!
log end
echo "built in $1 s"
"""

FREE, BUSY = 2, 3  # WorkerState


def starts(log_path):
    """Job id -> how many runs of it started."""
    if not log_path.exists():
        return collections.Counter()
    return collections.Counter(line.split()[1] for line in log_path.read_text().splitlines()
                               if line.startswith("start "))


def orchestrator_id(orch):
    return re.search(r"orchestrator (\w+) serving gRPC", orch.log()).group(1)


def settled(broker, queue):
    wait_until(lambda: broker.unacked(queue) == 0, timeout=30, what=f"nothing unacked on {queue}")


@pytest.mark.timeout(240)
def test_kill9_orchestrator_mid_build_every_build_runs_once(cluster, tmp_path, broker, names):  # noqa: F811
    """8 builds of 20 s on 2 workers x 4; the orchestrator is killed (-9)
    while they run and started again: each build runs once, to its end, and
    each job gets exactly one status, a success."""
    log = tmp_path / "runs.log"
    flags = amqp_flags(broker, names)
    orch = cluster.orchestrator(amqp=flags)
    command = ["bash", "-c", RUNNER, str(log), "20"]
    for i in range(2):
        cluster.worker(orch, f"build-w{i}", command=command, capacity=4)
    orch.wait_workers(lambda ws: len(ws) == 2 and all(w.state == FREE for w in ws.values()), what="2 free workers")
    statuses = StatusCollector(broker, names["status-queue"])
    ids = [f"build-{i}" for i in range(8)]
    try:
        publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])
        wait_until(lambda: set(starts(log)) == set(ids), timeout=30, what="all 8 builds started")
        orch.kill9()
        orch = cluster.orchestrator(amqp=flags, port=orch.port, name="orchestrator-2")
        statuses.wait_all(ids, timeout=120)
        settled(broker, names["execute-queue"])
    finally:
        statuses.close()

    with statuses.lock:
        received = list(statuses.statuses)
    per_job = collections.Counter(s["jobId"] for s in received)
    assert per_job == collections.Counter(ids), f"statuses per job: {per_job}"
    failed = {s["jobId"]: s.get("error") for s in received if not s["success"]}
    assert not failed, f"builds reported failed: {failed}"
    assert all("built in 20 s" in s["logs"] for s in received)
    assert starts(log) == collections.Counter(ids), f"runs started per job: {starts(log)}"
    ends = [line for line in log.read_text().splitlines() if line.startswith("end ")]
    assert len(ends) == 8, "every build ran to its end, none was stopped"
    # The new orchestrator attached to all 8 runs (they were redelivered to it).
    assert orch.log().count("carries its run from before") == 8, orch.log()[-3000:]


@pytest.mark.timeout(300)
def test_two_orchestrators_one_killed_its_workers_fail_over(cluster, tmp_path, broker, names):  # noqa: F811
    """Two orchestrators share one queue; six workers, three registered with
    each (the other as their second address). 1,000 jobs; one orchestrator is
    killed (-9) midway: its workers register with the other within seconds,
    carrying their running jobs, which finish without starting again; every
    job gets a status, and none runs twice."""
    log = tmp_path / "runs.log"
    flags = amqp_flags(broker, names)
    a = cluster.orchestrator(amqp=flags, name="orch-a")
    b = cluster.orchestrator(amqp=flags, name="orch-b")
    command = ["bash", "-c", RUNNER, str(log), "id"]
    for i in range(6):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        cluster.worker(first, f"fo-w{i}", command=command, capacity=4, more_orchestrators=(second.port,))
    for o in (a, b):
        o.wait_workers(lambda ws: len(ws) == 3 and all(w.state == FREE for w in ws.values()),
                       what=f"3 free workers on {o.name}")
    statuses = StatusCollector(broker, names["status-queue"])
    ids = [f"fo-{i:04d}" for i in range(1000)]
    try:
        publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])
        wait_until(lambda: len(statuses.ids()) >= 300, timeout=90, what="300 statuses")
        a.kill9()
        killed = time.monotonic()
        b.wait_workers(lambda ws: len(ws) == 6 and all(w.state in (FREE, BUSY) for w in ws.values()),
                       timeout=15, what="all 6 workers live on the surviving orchestrator")
        failover_s = time.monotonic() - killed
        statuses.wait_all(ids, timeout=180)
        settled(broker, names["execute-queue"])
    finally:
        statuses.close()

    with statuses.lock:
        received = list(statuses.statuses)
    problems = []
    missing = set(ids) - {s["jobId"] for s in received}
    if missing:
        problems.append(f"{len(missing)} jobs without a status, e.g. {sorted(missing)[:5]}")
    failed = {s["jobId"]: s.get("error") for s in received if not s["success"]}
    if failed:
        problems.append(f"{len(failed)} jobs failed, e.g. {list(failed.items())[:3]}")
    # A status published by the killed orchestrator but not acked is published
    # again by the survivor, which attached to the same run: the same statusId.
    by_job = collections.defaultdict(set)
    for s in received:
        by_job[s["jobId"]].add(s["statusId"])
    split = {k: v for k, v in by_job.items() if len(v) > 1}
    if split:
        problems.append(f"{len(split)} jobs with statuses of different runs, e.g. {list(split.items())[:3]}")
    twice = {k: n for k, n in starts(log).items() if n > 1}
    if twice:
        problems.append(f"{len(twice)} jobs started more than once, e.g. {list(twice.items())[:5]}")
    overlaps = overlapping_runs(log.read_text())
    if overlaps:
        problems.append(f"{len(overlaps)} jobs ran twice at the same time: {overlaps[:10]}")
    print(f"failover: 6 workers live on the survivor {failover_s:.1f} s after the kill; "
          f"{len(received)} statuses for {len(ids)} jobs; "
          f"{b.log().count('carries its run from before')} runs attached to")
    assert not problems, "\n".join(problems)
    assert failover_s < 10


@pytest.mark.timeout(120)
def test_a_job_nobody_comes_back_for_is_stopped_after_the_grace(cluster, tmp_path, broker, names):  # noqa: F811
    """The orphan grace is a bound: with no orchestrator to come back, the
    worker stops the job when its grace ends, says so, and keeps nothing."""
    log = tmp_path / "runs.log"
    flags = amqp_flags(broker, names)
    orch = cluster.orchestrator(amqp=flags)
    w = cluster.worker(orch, "grace-w", command=["bash", "-c", RUNNER, str(log), "60"], capacity=1,
                       extra=["--orphan-grace-s", "2"])
    orch.wait_workers(lambda ws: ws.get("grace-w") and ws["grace-w"].state == FREE, what="a free worker")
    publish(broker, names["execute-queue"], [json.dumps(job("grace-1"))])
    wait_until(lambda: starts(log)["grace-1"] == 1, timeout=30, what="the job started")
    orch.kill9()
    w.wait_log("runs on for up to 2 s")
    w.wait_log("no orchestrator came back for it within 2 s: stopped", timeout=30)
    wait_until(lambda: "end grace-1" in log.read_text(), timeout=30, what="the job's processes ended")


@pytest.mark.timeout(180)
def test_sigterm_hands_running_builds_over_to_the_next_orchestrator(cluster, tmp_path, broker, names):  # noqa: F811
    """A stopping orchestrator (SIGTERM) whose drain deadline passes hands
    its running builds back to the queue without stopping them; the
    orchestrator that comes next attaches to them."""
    log = tmp_path / "runs.log"
    flags = amqp_flags(broker, names)
    orch = cluster.orchestrator(amqp=flags, extra=["--drain-timeout-s", "1"])
    cluster.worker(orch, "handover-w", command=["bash", "-c", RUNNER, str(log), "8"], capacity=2)
    orch.wait_workers(lambda ws: ws.get("handover-w") and ws["handover-w"].state == FREE, what="a free worker")
    statuses = StatusCollector(broker, names["status-queue"])
    ids = ["handover-1", "handover-2"]
    try:
        publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])
        wait_until(lambda: set(starts(log)) == set(ids), timeout=30, what="both builds started")
        orch.proc.send_signal(signal.SIGTERM)
        assert orch.proc.wait(timeout=30) == 0
        assert "handed back to the queue" in orch.log()
        assert not statuses.ids(), "no status while the builds still run"
        orch = cluster.orchestrator(amqp=flags, port=orch.port, name="orchestrator-2")
        statuses.wait_all(ids, timeout=60)
        settled(broker, names["execute-queue"])
    finally:
        statuses.close()
    with statuses.lock:
        received = list(statuses.statuses)
    assert collections.Counter(s["jobId"] for s in received) == collections.Counter(ids)
    assert all(s["success"] for s in received), received
    assert starts(log) == collections.Counter(ids)



@pytest.mark.timeout(180)
def test_a_job_redelivered_to_another_orchestrator_while_it_runs_does_not_run_again(
        cluster, tmp_path, broker, names):  # noqa: F811
    """Two orchestrators on one queue. The broker closes the job connection
    of the one whose worker runs 4 builds (a node going away does the same):
    the broker redelivers the 4 jobs to the other, which has a free worker.
    The first, reconnected, says on the peers exchange that it still runs
    them; the other waits past its carrier wait, and acks each once the
    first says its status is out. Each build runs once; each job gets one
    status."""
    log = tmp_path / "runs.log"
    flags = {**amqp_flags(broker, names), "mq-peers-exchange": names["execute-queue"] + ".peers"}
    command = ["bash", "-c", RUNNER, str(log), "8"]
    short_wait = ["--carrier-wait-ms", "1500"]  # without the peers' word, the redeliveries would run after it
    a = cluster.orchestrator(amqp=flags, name="orch-a", extra=short_wait)
    cluster.worker(a, "held-w", command=command, capacity=4)
    a.wait_workers(lambda ws: ws.get("held-w") and ws["held-w"].state == FREE, what="a's worker free")
    statuses = StatusCollector(broker, names["status-queue"])
    ids = [f"held-{i}" for i in range(4)]
    try:
        publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])
        wait_until(lambda: set(starts(log)) == set(ids), timeout=30, what="4 builds started under a")
        b = cluster.orchestrator(amqp=flags, name="orch-b", extra=short_wait)
        cluster.worker(b, "idle-w", command=command, capacity=4)
        b.wait_workers(lambda ws: ws.get("idle-w") and ws["idle-w"].state == FREE, what="b's worker free")
        assert broker.close_connections(f"blacktree-orchestrator {orchestrator_id(a)} source") == 1
        statuses.wait_all(ids, timeout=60)
        settled(broker, names["execute-queue"])
    finally:
        statuses.close()
    with statuses.lock:
        received = list(statuses.statuses)
    assert collections.Counter(s["jobId"] for s in received) == collections.Counter(ids), received
    assert all(s["success"] and s["workerId"] == "held-w" for s in received), received
    assert starts(log) == collections.Counter(ids), f"runs started per job: {starts(log)}"
    settled_by_a = b.metrics()["blacktree_jobs_settled_elsewhere_total"]
    attached_in_a = a.metrics()["blacktree_job_duplicates_total"]
    assert settled_by_a >= 1, b.log()[-3000:]
    assert "acked here without running it again" in b.log()
    assert settled_by_a + attached_in_a == len(ids), (settled_by_a, attached_in_a)


@pytest.mark.timeout(180)
def test_three_orchestrators_a_redelivery_finds_the_one_its_worker_went_to(
        cluster, tmp_path, broker, names):  # noqa: F811
    """Three orchestrators on one queue. The one whose worker runs 4 builds
    is killed (-9); the worker registers with the next address, b, carrying
    them; the broker redelivers the 4 jobs to b and c, whichever has room.
    c, whose pool does not know the runs, hears b say that its worker carries
    them and puts them back in the queue until they reach b, which attaches
    to the runs. Each build runs once; each job gets one status."""
    log = tmp_path / "runs.log"
    flags = {**amqp_flags(broker, names), "mq-peers-exchange": names["execute-queue"] + ".peers"}
    command = ["bash", "-c", RUNNER, str(log), "8"]
    a = cluster.orchestrator(amqp=flags, name="orch-a")
    statuses = StatusCollector(broker, names["status-queue"])
    ids = [f"three-{i}" for i in range(4)]
    try:
        b = cluster.orchestrator(amqp=flags, name="orch-b")
        cluster.worker(a, "carrier-w", command=command, capacity=4, more_orchestrators=(b.port,))
        a.wait_workers(lambda ws: ws.get("carrier-w") and ws["carrier-w"].state == FREE, what="a's worker free")
        publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])
        wait_until(lambda: set(starts(log)) == set(ids), timeout=30, what="4 builds started under a")
        cluster.worker(b, "b-w", command=command, capacity=2)
        c = cluster.orchestrator(amqp=flags, name="orch-c")
        cluster.worker(c, "c-w", command=command, capacity=4)
        for o, w in ((b, "b-w"), (c, "c-w")):
            o.wait_workers(lambda ws: ws.get(w) and ws[w].state == FREE, what=f"{w} free")
        a.kill9()  # its 4 deliveries go back: to b (room for 2) and c (room for 4)
        statuses.wait_all(ids, timeout=90)
        settled(broker, names["execute-queue"])
    finally:
        statuses.close()
    with statuses.lock:
        received = list(statuses.statuses)
    assert collections.Counter(s["jobId"] for s in received) == collections.Counter(ids), received
    assert all(s["success"] and s["workerId"] == "carrier-w" for s in received), received
    assert starts(log) == collections.Counter(ids), f"runs started per job: {starts(log)}"
    assert b.log().count("carries its run from before") == len(ids), b.log()[-3000:]
    assert c.metrics()["blacktree_jobs_passed_back_total"] >= 1, c.log()[-3000:]
    assert "registered with another orchestrator; back to the queue" in c.log()
