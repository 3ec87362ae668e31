# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 4: the orchestrator end to end on a real rabbitmq-server, with real
worker processes (argv runner), driven by an ordinary AMQP client (pika).

One broker for the module (tests/support/rabbitmq.sh); each test uses queue
names of its own so tests never see each other's messages."""

import collections
import json
import subprocess
import threading
import uuid
from pathlib import Path

import pika
import pytest

from conftest import job, wait_until

RABBITMQ_SH = Path(__file__).resolve().parents[1] / "support" / "rabbitmq.sh"


class Broker:
    def __init__(self, directory: Path):
        self.dir = directory
        self.start()

    def start(self):
        subprocess.run(["bash", str(RABBITMQ_SH), "start", str(self.dir)], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        self.port = int((self.dir / "port").read_text())
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def stop(self):
        subprocess.run(["bash", str(RABBITMQ_SH), "stop", str(self.dir)], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)

    def unacked(self, queue) -> int:
        return self.count(queue, "messages_unacknowledged")

    def count(self, queue, column="messages_unacknowledged") -> int:
        """A `rabbitmqctl list_queues` column of `queue` (messages_ready, ...); 0 when it does not exist."""
        out = subprocess.run(["bash", str(RABBITMQ_SH), "ctl", str(self.dir), "list_queues", "-q", "name", column],
                             check=True, timeout=60, capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1])
        return 0

    def connection(self):
        return pika.BlockingConnection(pika.URLParameters(self.url))

    def close_connections(self, name) -> int:
        """Closes, from the broker's side (as a node going away would), the
        connections whose client-given name is `name`; returns how many."""
        ctl = ["bash", str(RABBITMQ_SH), "ctl", str(self.dir)]
        out = subprocess.run([*ctl, "list_connections", "-q", "pid", "client_properties"], check=True, timeout=60,
                             capture_output=True, text=True).stdout
        needle = '{"connection_name","' + name + '"}'
        pids = [line.split("\t", 1)[0] for line in out.splitlines() if needle in line]
        for pid in pids:
            subprocess.run([*ctl, "close_connection", pid, "closed by a test"], check=True, timeout=60,
                           stdout=subprocess.DEVNULL)
        return len(pids)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("rabbitmq"))
    yield b
    b.stop()


@pytest.fixture
def names():
    suffix = uuid.uuid4().hex[:8]
    return {"execute-queue": f"execute.{suffix}", "status-queue": f"status.{suffix}",
            "events-exchange": f"events.{suffix}", "dead-letter-exchange": f"dlx.{suffix}",
            "dead-letter-queue": f"dead.{suffix}"}


def amqp_flags(broker, names):
    return {"mq-url": broker.url, **names}


def publish(broker, queue, bodies, persistent=True, arguments=None):
    """Publishes with publisher confirms and mandatory, like a control plane
    should. broker: a Broker, or a RabbitCluster (through any running node).
    arguments: the queue's declared arguments (x-queue-type, ...)."""
    with broker.connection() as conn:
        ch = conn.channel()
        ch.queue_declare(queue=queue, durable=True, arguments=arguments)
        ch.confirm_delivery()
        props = pika.BasicProperties(delivery_mode=2 if persistent else 1, content_type="application/json")
        for body in bodies:
            ch.basic_publish(exchange="", routing_key=queue, body=body if isinstance(body, bytes) else body.encode(),
                             properties=props, mandatory=True)


def drain(broker, queue):
    """Every message in `queue` now (basic.get until empty), with headers."""
    out = []
    with broker.connection() as conn:
        ch = conn.channel()
        ch.queue_declare(queue=queue, durable=True)
        while True:
            method, props, body = ch.basic_get(queue=queue, auto_ack=True)
            if method is None:
                return out
            out.append((props, body))


class StatusCollector:
    """Reads a status queue in the background, reconnecting when the broker
    (or, for a RabbitCluster, the node it is on) goes away. arguments: the
    queue's declared arguments (x-queue-type, ...)."""

    def __init__(self, broker, queue, arguments=None):
        self.broker, self.queue, self.arguments = broker, queue, arguments
        self.statuses = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_flag.is_set():
            try:
                with self.broker.connection() as conn:
                    ch = conn.channel()
                    ch.queue_declare(queue=self.queue, durable=True, arguments=self.arguments)
                    ch.basic_qos(prefetch_count=200)
                    for method, props, body in ch.consume(self.queue, inactivity_timeout=0.2):
                        if self.stop_flag.is_set():
                            break
                        if method is None:
                            continue
                        with self.lock:
                            self.statuses.append(json.loads(body))
                        ch.basic_ack(method.delivery_tag)
            except Exception:  # broker (or node) restarting: try again
                self.stop_flag.wait(0.3)

    def ids(self):
        with self.lock:
            return collections.Counter(s["jobId"] for s in self.statuses)

    def count(self):
        """How many jobs have a status."""
        with self.lock:
            return len({s["jobId"] for s in self.statuses})

    def by_job(self):
        with self.lock:
            out = collections.defaultdict(list)
            for s in self.statuses:
                out[s["jobId"]].append(s)
            return out

    def wait_all(self, expected_ids, timeout):
        return wait_until(lambda: set(expected_ids) <= set(self.ids()), timeout,
                          f"statuses for all {len(expected_ids)} jobs")

    def close(self):
        self.stop_flag.set()
        self.thread.join(timeout=10)


@pytest.fixture
def collectors():
    made = []
    yield lambda broker, queue: made.append(StatusCollector(broker, queue)) or made[-1]
    for c in made:
        c.close()


def start_workers(cluster, orch, count, command, capacity=2):
    for i in range(count):
        cluster.worker(orch, f"w{i}", command=command, capacity=capacity)
    orch.wait_workers(lambda ws: len(ws) == count and all(w.state == 2 for w in ws.values()),
                      what=f"{count} free workers")


def test_thousand_jobs_exactly_one_status_each_and_bounded_prefetch(cluster, broker, names, collectors):
    orch = cluster.orchestrator(amqp=amqp_flags(broker, names))
    start_workers(cluster, orch, 4, ["sh", "-c", "echo built $BLACKTREE_JOB_ID"], capacity=2)
    statuses = collectors(broker, names["status-queue"])
    ids = [f"job-{i:04d}" for i in range(1000)]
    publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])

    # Sample the broker's unacknowledged count while the stream flows.
    samples = []
    while len(statuses.ids()) < len(ids) and len(samples) < 20:
        samples.append(broker.unacked(names["execute-queue"]))
    statuses.wait_all(ids, timeout=240)
    counts = statuses.ids()
    assert set(counts) == set(ids)
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
    assert max(samples) <= 8, f"unacked samples {samples} exceed the 8 free slots"
    with statuses.lock:
        bad = [s for s in statuses.statuses if not s["success"] or s["logs"] != f"built {s['jobId']}\n"]
    assert not bad, bad[:3]

    m = orch.metrics()
    assert m["blacktree_jobs_received_total"] == 1000
    assert m["blacktree_jobs_succeeded_total"] == 1000
    assert m["blacktree_jobs_failed_total"] == 0
    assert m["blacktree_job_run_duration_seconds_count"] == 1000
    assert m['blacktree_workers{state="free"}'] + m['blacktree_workers{state="busy"}'] == 4
    assert orch.http_get("/healthz")[0] == 200


def test_invalid_messages_are_dead_lettered_with_a_reason(cluster, broker, names, collectors):
    orch = cluster.orchestrator(amqp=amqp_flags(broker, names))
    start_workers(cluster, orch, 1, ["true"])
    statuses = collectors(broker, names["status-queue"])
    publish(broker, names["execute-queue"], [
        "this is not json",
        json.dumps({"jobId": "no-fields"}),
        json.dumps({"jobId": "wrong-type", "repoUrl": 42, "branch": "main", "imageName": "x"}),
        json.dumps(job("good-after", unknownField={"nested": True})),
    ])
    statuses.wait_all(["no-fields", "wrong-type", "good-after"], timeout=30)
    with statuses.lock:
        by_id = {s["jobId"]: s for s in statuses.statuses}
    assert by_id["good-after"]["success"]
    assert not by_id["no-fields"]["success"] and "repoUrl" in by_id["no-fields"]["error"]
    assert not by_id["wrong-type"]["success"] and "repoUrl" in by_id["wrong-type"]["error"]

    dead = wait_until(lambda: (lambda d: d if len(d) >= 3 else None)(drain(broker, names["dead-letter-queue"])),
                      timeout=20, what="three dead letters")
    reasons = {body.decode(errors="replace"): props.headers.get("x-blacktree-reason") for props, body in dead}
    assert "not a valid JobRequest" in reasons["this is not json"]
    assert all(reasons.values()), reasons
    assert orch.proc.poll() is None
    assert orch.metrics()["blacktree_jobs_dead_lettered_total"] == 3


def test_orchestrator_kill9_mid_stream_loses_nothing(cluster, broker, names, collectors):
    flags = amqp_flags(broker, names)
    orch = cluster.orchestrator(amqp=flags)
    start_workers(cluster, orch, 3, ["sh", "-c", "sleep 0.05"], capacity=2)
    statuses = collectors(broker, names["status-queue"])
    ids = [f"k-{i:03d}" for i in range(300)]
    publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])

    wait_until(lambda: len(statuses.ids()) >= 60, timeout=60, what="60 statuses before the kill")
    port = orch.port
    orch.kill9()
    again = cluster.orchestrator(amqp=flags, port=port, name="orchestrator-2")
    statuses.wait_all(ids, timeout=180)
    counts = statuses.ids()
    duplicates = sorted(k for k, n in counts.items() if n > 1)
    print(f"kill -9 mid-stream: {len(ids)} jobs, {len(duplicates)} duplicate statuses: {duplicates}")
    assert set(counts) == set(ids)
    # A duplicate can only come from a redelivery, and its later status says so.
    with statuses.lock:
        for dup in duplicates:
            assert any(s["redelivered"] for s in statuses.statuses if s["jobId"] == dup), dup
    assert len(duplicates) <= 6, "at most the jobs in flight at the kill may run twice"
    # What was unacknowledged at the kill came back marked as redelivered.
    with statuses.lock:
        assert any(s["redelivered"] for s in statuses.statuses)
    assert again.proc.poll() is None


def test_broker_restart_mid_stream(cluster, broker, names, collectors):
    orch = cluster.orchestrator(amqp=amqp_flags(broker, names))
    start_workers(cluster, orch, 2, ["sh", "-c", "sleep 0.05"], capacity=2)
    ids = [f"b-{i:03d}" for i in range(150)]
    publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])
    wait_until(lambda: orch.metrics()["blacktree_jobs_succeeded_total"] >= 20, timeout=60, what="20 jobs done")

    broker.stop()
    wait_until(lambda: orch.http_get("/healthz")[0] == 503, timeout=30, what="/healthz not ready without a broker")
    broker.start()
    wait_until(lambda: orch.http_get("/healthz")[0] == 200, timeout=60, what="the orchestrator reconnected")

    statuses = collectors(broker, names["status-queue"])
    statuses.wait_all(ids, timeout=180)
    assert set(statuses.ids()) == set(ids)
    assert orch.proc.poll() is None


def test_sigterm_mid_stream_requeues_the_rest(cluster, broker, names, collectors):
    orch = cluster.orchestrator(amqp=amqp_flags(broker, names), extra=["--drain-timeout-s", "10"])
    start_workers(cluster, orch, 2, ["sh", "-c", "sleep 0.3"], capacity=2)
    statuses = collectors(broker, names["status-queue"])
    ids = [f"t-{i:03d}" for i in range(100)]
    publish(broker, names["execute-queue"], [json.dumps(job(i)) for i in ids])
    wait_until(lambda: len(statuses.ids()) >= 10, timeout=60, what="10 statuses")

    assert orch.terminate(timeout=60) == 0
    assert "draining" in orch.log()
    wait_until(lambda: broker.unacked(names["execute-queue"]) == 0, timeout=30, what="nothing left unacked")
    remaining = [json.loads(body)["jobId"] for _, body in drain(broker, names["execute-queue"])]
    done = set(statuses.ids())
    # Every job either finished (status) or is back in the queue; none is both lost.
    assert set(ids) == done | set(remaining), set(ids) - done - set(remaining)
    assert remaining, "the drain should have left unstarted jobs in the queue"


def test_healthz_names_no_broker_user(cluster, broker, names):
    # A login the broker refuses: the reason names the user, which belongs in
    # the orchestrator's log, not on the unauthenticated /healthz.
    url = broker.url.replace("guest:guest@", "blacktree-probe-user:wrong-password@")
    orch = cluster.orchestrator(amqp={"mq-url": url, **names})
    code, body = wait_until(lambda: (lambda r: r if r[0] == 503 else None)(orch.http_get("/healthz")),
                            timeout=30, what="/healthz not ready with a refused login")
    assert "not connected to the broker" in body
    assert "blacktree-probe-user" not in body and "wrong-password" not in body
    wait_until(lambda: "blacktree-probe-user" in orch.log(), timeout=30, what="the reason in the log")


def test_the_broker_backlog_is_on_metrics_and_the_dashboard(cluster, broker, names):
    # No worker: the orchestrator takes nothing, so all of it waits in the broker.
    orch = cluster.orchestrator(amqp=amqp_flags(broker, names))
    publish(broker, names["execute-queue"], [json.dumps(job(f"q-{i}")) for i in range(5)])
    key = f'blacktree_amqp_queue_messages_ready{{queue="{names["execute-queue"]}"}}'
    wait_until(lambda: orch.metrics().get(key) == 5, timeout=30, what="5 messages ready in the metrics")
    assert orch.metrics()[f'blacktree_amqp_queue_consumers{{queue="{names["execute-queue"]}"}}'] == 0
    status, body = orch.http_get("/")
    assert status == 200 and f"5 jobs ready in {names['execute-queue']}" in body, body
