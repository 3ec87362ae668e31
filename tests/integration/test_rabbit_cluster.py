# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 13: the orchestrator on a three-node RabbitMQ cluster with quorum
queues (tests/support/rabbitmq_cluster.sh). 1,000 jobs; while they flow, the
node the orchestrator is connected to is stopped (and started again, so the
cluster keeps its majority), then the node that leads the job queue: jobs
keep flowing, every job gets a status, and a job with more than one status
shows why (the same statusId: one status published again; or a redelivery).

The orchestrator gets every node's URL (--mq-url a,b,c) and declares the
queues itself as quorum queues (--mq-queue-type quorum). The test plays the
control plane with pika, which also takes a list of nodes."""

import collections
import json
import re
import subprocess
import uuid
from pathlib import Path

import pika
import pytest

from conftest import job, wait_until
from test_amqp_e2e import StatusCollector, publish

CLUSTER_SH = Path(__file__).resolve().parents[1] / "support" / "rabbitmq_cluster.sh"
QUORUM = {"x-queue-type": "quorum"}  # the orchestrators declare the queues so (--mq-queue-type quorum)


class RabbitCluster:
    """The nodes of rabbitmq_cluster.sh, numbered from 1."""

    def __init__(self, directory: Path, n=3):
        self.dir = directory
        self.n = n
        self._run("start", str(n), timeout=240)
        self.urls = (directory / "urls").read_text().strip()
        self.ports = [int(p) for p in (directory / "ports").read_text().split()]
        self.names = (directory / "names").read_text().split()
        self.running = set(range(1, n + 1))

    def _run(self, command, *args, timeout=120):
        return subprocess.run(["bash", str(CLUSTER_SH), command, str(self.dir), *args], check=True,
                              timeout=timeout, capture_output=True, text=True).stdout

    def stop_node(self, i):
        self._run("stop-node", str(i))
        self.running.discard(i)

    def quorum_critical(self, i) -> bool:
        """`rabbitmq-queues check_if_node_is_quorum_critical` on node i: stopping
        it now would leave a quorum queue without a majority (a member elsewhere
        has not caught up yet)."""
        try:
            self._run("queues", str(i), "check_if_node_is_quorum_critical", timeout=60)
            return False
        except subprocess.CalledProcessError:
            return True

    def start_node(self, i):
        self._run("start-node", str(i), timeout=180)
        self.running.add(i)

    def stop(self):
        self._run("stop")

    def ctl_json(self, *args):
        """rabbitmqctl ARGS --formatter json on a running node."""
        i = min(self.running)
        return json.loads(self._run("ctl", str(i), *args, "--formatter", "json", timeout=60))

    def queues(self):
        """{name: {"type", "leader" (node number), "online" (node numbers)}}."""
        rows = self.ctl_json("list_queues", "name", "type", "leader", "online")
        index = {name: i + 1 for i, name in enumerate(self.names)}
        return {r["name"]: {"type": r["type"], "leader": index.get(r.get("leader")),
                            "online": sorted(index[m] for m in r.get("online") or [] if m in index)}
                for r in rows}

    def node_of_port(self, port):
        return self.ports.index(port) + 1

    def parameters(self):
        """pika's connection parameters for the running nodes (it tries them in turn)."""
        return [pika.URLParameters(u + "?connection_attempts=1&socket_timeout=5")
                for i, u in enumerate(self.urls.split(","), start=1) if i in self.running]

    def connection(self):
        return pika.BlockingConnection(self.parameters())


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory):
    c = RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster"))
    yield c
    c.stop()


def source_node(orch, cluster):
    """The node the orchestrator's job source is connected to now, from its log
    ("amqp source: connected [again ]to amqp://127.0.0.1:<port>/")."""
    found = re.findall(r"amqp source: connected (?:again )?to amqp://127\.0\.0\.1:(\d+)/", orch.log())
    return cluster.node_of_port(int(found[-1])) if found else None


@pytest.mark.timeout(420)
def test_jobs_keep_flowing_when_the_connected_node_and_the_queue_leader_go_away(cluster, rabbit_cluster, tmp_path):
    rc = rabbit_cluster
    suffix = uuid.uuid4().hex[:8]
    names = {"execute-queue": f"execute.{suffix}", "status-queue": f"status.{suffix}",
             "cancel-queue": f"cancel.{suffix}", "events-exchange": f"events.{suffix}",
             "dead-letter-exchange": f"dlx.{suffix}", "dead-letter-queue": f"dead.{suffix}"}
    orch = cluster.orchestrator(amqp={"mq-url": rc.urls, "mq-queue-type": "quorum", "mq-heartbeat-s": 5, **names})
    # The orchestrator declared its queues as quorum queues, on every node.
    queues = wait_until(lambda: (lambda q: q if all(names[k] in q for k in
                                                    ("execute-queue", "status-queue", "cancel-queue",
                                                     "dead-letter-queue")) else None)(rc.queues()),
                        timeout=30, what="the orchestrator's queues")
    for key in ("execute-queue", "status-queue", "cancel-queue", "dead-letter-queue"):
        assert queues[names[key]]["type"] == "quorum", (key, queues[names[key]])
        assert queues[names[key]]["online"] == [1, 2, 3], (key, queues[names[key]])

    for i in range(3):
        cluster.worker(orch, f"w{i}", command=["sh", "-c", "sleep 0.5"], capacity=4)
    orch.wait_workers(lambda ws: len(ws) == 3 and all(w.state == 2 for w in ws.values()), what="3 free workers")
    statuses = StatusCollector(rc, names["status-queue"], arguments=QUORUM)
    try:
        ids = [f"c-{i:04d}" for i in range(1000)]
        first, second = ids[:600], ids[600:]
        publish(rc, names["execute-queue"], [json.dumps(job(i)) for i in first], arguments=QUORUM)
        wait_until(lambda: statuses.count() >= 30, timeout=60, what="30 statuses")

        # 1. The node the orchestrator is connected to goes away.
        connected = wait_until(lambda: source_node(orch, rc), timeout=10, what="the source's node in the log")
        rc.stop_node(connected)
        print(f"stopped node {connected}, which the orchestrator was connected to")
        elsewhere = wait_until(lambda: (lambda n: n if n not in (None, connected) else None)(source_node(orch, rc)),
                               timeout=30, what="the source connected to another node")
        before = statuses.count()
        wait_until(lambda: statuses.count() >= min(before + 30, len(first)), timeout=60,
                   what=f"jobs flowing through node {elsewhere}")
        # Back again, so that the cluster keeps its majority for the next step.
        rc.start_node(connected)

        # 2. The node that leads the job queue goes away.
        publish(rc, names["execute-queue"], [json.dumps(job(i)) for i in second], arguments=QUORUM)
        wait_until(lambda: statuses.count() >= len(first) + 30, timeout=120, what="the second batch flowing")
        leader = rc.queues()[names["execute-queue"]]["leader"]
        assert leader is not None
        rc.stop_node(leader)
        print(f"stopped node {leader}, the leader of {names['execute-queue']}")
        new_leader = wait_until(lambda: rc.queues()[names["execute-queue"]]["leader"] not in (None, leader) and
                                rc.queues()[names["execute-queue"]]["leader"], timeout=30, what="a new leader")
        before = statuses.count()
        wait_until(lambda: statuses.count() >= min(before + 30, len(ids)), timeout=60,
                   what=f"jobs flowing with node {new_leader} leading")

        # Nothing lost: every job has a status, and all succeeded.
        wait_until(lambda: statuses.count() == len(ids), timeout=180, what=f"statuses for all {len(ids)} jobs")
        by_job = statuses.by_job()
        assert set(by_job) == set(ids)
        failed = [s for runs in by_job.values() for s in runs if not s["success"]]
        assert not failed, failed[:3]
        # A duplicate is recognisable: the same statusId (one status published
        # again, or delivered again to the collector), or the status of a run
        # that followed a redelivery, marked so. At most one run per job is not.
        duplicates = {k: v for k, v in by_job.items() if len(v) > 1}
        for job_id, runs in duplicates.items():
            by_status_id = collections.defaultdict(list)
            for s in runs:
                assert s.get("statusId"), s
                by_status_id[s["statusId"]].append(s)
            unmarked = [sid for sid, same in by_status_id.items() if not any(s.get("redelivered") for s in same)]
            assert len(unmarked) <= 1, (job_id, runs)
        print(f"{len(ids)} jobs, {len(duplicates)} with more than one status "
              f"({sum(len({s['statusId'] for s in v}) > 1 for v in duplicates.values())} of them from a second run)")
        assert orch.proc.poll() is None
        assert orch.http_get("/healthz")[0] == 200
    finally:
        statuses.close()


@pytest.mark.timeout(420)
def test_rolling_upgrade(cluster, rabbit_cluster, tmp_path):
    """docs/operations.md's rolling upgrade, scripted, with builds running
    throughout: two orchestrators on the cluster (quorum queues), four
    workers with both addresses; each orchestrator stopped (SIGTERM) and
    started again, then each worker, then each broker node. Nothing is lost
    and no build starts over: builds an orchestrator hands over are taken
    up before workers stop, and a job whose delivery went back to the queue
    with a node and reached the other orchestrator waits there while the
    first says (on the peers exchange) that it still runs it. A status
    published twice (its confirm lost with a node) is one run's: one
    statusId per job."""
    import time
    import signal
    from test_failover import RUNNER, starts

    rc = rabbit_cluster
    # The whole cluster first (a test before may have left a node stopped):
    # a quorum queue keeps going with one node of three down, not two.
    for node in range(1, rc.n + 1):
        if node not in rc.running:
            rc.start_node(node)
    suffix = uuid.uuid4().hex[:8]
    names = {"execute-queue": f"up.execute.{suffix}", "status-queue": f"up.status.{suffix}",
             "cancel-queue": "", "events-exchange": f"up.events.{suffix}",
             "dead-letter-exchange": f"up.dlx.{suffix}", "dead-letter-queue": f"up.dead.{suffix}"}
    flags = {"mq-url": rc.urls, "mq-queue-type": "quorum", "mq-heartbeat-s": 5, **names}
    short_drain = ["--drain-timeout-s", "1"]  # builds take 1-3 s: most running ones are handed over
    orchs = [cluster.orchestrator(amqp=flags, name=f"orch-{n}", extra=short_drain) for n in "ab"]
    stopped_orchs = []
    log = tmp_path / "runs.log"
    command = ["bash", "-c", RUNNER, str(log), "id-long"]  # builds of 1-3 s
    workers = {}

    def start_worker(i, generation):
        first, second = (orchs[0], orchs[1]) if i % 2 == 0 else (orchs[1], orchs[0])
        old = workers.get(i)
        workers[i] = cluster.worker(first, f"up-w{i}", command=command, capacity=2,
                                    more_orchestrators=(second.port,), port=old.port if old else None,
                                    name=f"up-w{i}-{generation}")

    def registered(worker_id):
        return any(worker_id in o.list_workers() for o in orchs)

    for i in range(4):
        start_worker(i, 0)
    wait_until(lambda: all(registered(f"up-w{i}") for i in range(4)), timeout=30, what="4 workers registered")
    statuses = StatusCollector(rc, names["status-queue"], arguments=QUORUM)
    ids = [f"up-{i:04d}" for i in range(150)]
    try:
        publish(rc, names["execute-queue"], [json.dumps(job(i)) for i in ids], arguments=QUORUM)
        wait_until(lambda: statuses.count() >= 10, timeout=60, what="builds under way")
        # 1. Orchestrators, one at a time: stop (drain, hand the rest over), start, healthy.
        for n in range(2):
            old = orchs[n]
            old.proc.send_signal(signal.SIGTERM)
            assert old.proc.wait(timeout=60) == 0
            stopped_orchs.append(old)
            new = orchs[n] = cluster.orchestrator(amqp=flags, port=old.port, name=f"{old.name}-2", extra=short_drain)
            wait_until(lambda: new.http_get("/healthz")[0] == 200, timeout=30, what=f"{new.name} healthy")
            wait_until(lambda: all(registered(f"up-w{i}") for i in range(4)), timeout=30,
                       what="every worker registered again")
        # As docs/operations.md says: before workers stop, the builds the
        # stopped orchestrators handed over (the workers logged job.orphaned)
        # have been taken up (job.adopted), or a worker stopping first would
        # take the kept result with it.
        everyone = [*orchs, *stopped_orchs]

        def handed_over():
            return {m for w in workers.values() for m in re.findall(r"job (\S+): its caller went away", w.log())}

        def adopted():
            return {m for o in everyone for m in re.findall(r"job (\S+) goes to worker \S+, which carries its run",
                                                             o.log())}

        wait_until(lambda: handed_over() <= adopted(), timeout=90, interval=0.5,
                   what="the handed-over builds taken up by an orchestrator")
        handed = handed_over()
        # 2. Workers, one at a time: drain, deregister, start again.
        for i in range(4):
            assert workers[i].terminate(timeout=60) == 0
            start_worker(i, 1)
            wait_until(lambda: registered(f"up-w{i}"), timeout=30, what=f"up-w{i} registered again")
        # 3. Broker nodes, one at a time: stop, start, back in the cluster.
        nodes_from = time.time()
        for node in range(1, rc.n + 1):
            # As docs/operations.md says: only a node whose queues keep a majority without it.
            wait_until(lambda: not rc.quorum_critical(node), timeout=120, interval=1,
                       what=f"node {node} not quorum-critical")
            rc.stop_node(node)
            before = statuses.count()
            if before < len(ids):
                # A quorum queue's leader election; a job whose delivery went
                # to the other orchestrator waits there until its run ends.
                wait_until(lambda: statuses.count() > before or statuses.count() == len(ids), timeout=120,
                           what=f"builds going on without node {node}")
            rc.start_node(node)
        wait_until(lambda: statuses.count() == len(ids), timeout=180, what=f"statuses for all {len(ids)} jobs")
    finally:
        statuses.close()

    by_job = statuses.by_job()
    failed = {k: [s.get("error") for s in v if not s["success"]] for k, v in by_job.items()}
    failed = {k: v for k, v in failed.items() if v}
    assert not failed, f"jobs failed during the upgrade: {list(failed.items())[:5]}"
    assert set(by_job) == set(ids)
    # Orchestrators and workers: no build started over.
    runs = collections.defaultdict(list)
    for line in log.read_text().splitlines():
        what, job_id, stamp, _pid = line.split()
        if what == "start":
            runs[job_id].append(float(stamp))
    twice = {k: ["orchestrators/workers" if t < nodes_from else "broker nodes" for t in v]
             for k, v in runs.items() if len(v) > 1}
    assert not twice, f"builds started over (during which step): {list(twice.items())[:5]}"
    split = {k: {st["statusId"] for st in v} for k, v in by_job.items() if len({st["statusId"] for st in v}) > 1}
    assert not split, f"jobs with statuses of different runs: {list(split.items())[:5]}"
    copies = sum(len(v) - 1 for v in by_job.values())
    print(f"rolling upgrade: {len(ids)} jobs, each run once; {len(handed)} builds handed over between "
          f"orchestrators; {copies} status(es) published twice by one run")
