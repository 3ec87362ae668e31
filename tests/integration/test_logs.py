# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 16: logs as data. With `--log-format json` every line an orchestrator
or a worker writes is one JSON object, and the lines about a job or a worker
carry `event`, `job_id`, `worker_id` (and `phase`, `state`, `outcome`,
`reason`, ...) as fields of their own, not only as words in `msg`. Every
change of a worker's lifecycle state and every broker connection error is
one line with its reason. A job no worker can take shows in /metrics as
blacktree_jobs_waiting{labels="..."}."""

import json
import re
import socket
import threading

import pytest

from conftest import job, pb, wait_until

pytestmark = pytest.mark.timeout(120)

FREE = pb.WORKER_STATE_FREE
DEAD = pb.WORKER_STATE_DEAD
JSON = ("--log-format", "json", "--log-level", "debug")
EVENT_NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
# Lines about a worker's lifecycle in the orchestrator's log.
LIFECYCLE = {"worker.registered", "worker.alive", "worker.dead", "worker.state", "worker.restarted",
             "worker.deregistered", "worker.forgotten"}


def json_lines(process):
    """Every line of the process's log, each parsed as a JSON object: the test
    fails on the first that is not one, or that lacks the four members every
    line has."""
    lines = []
    for number, line in enumerate(process.log().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} of {process.name}'s log is not JSON: {line!r}") from None
        assert isinstance(record, dict), f"line {number} of {process.name}'s log: {line!r}"
        missing = {"time_ms", "level", "logger", "msg"} - record.keys()
        assert not missing, f"line {number} of {process.name}'s log lacks {missing}: {line!r}"
        assert all(isinstance(v, str) for k, v in record.items() if k != "time_ms"), line
        if "event" in record:
            assert EVENT_NAME.match(record["event"]), f"not a dotted event name: {line!r}"
        lines.append(record)
    return lines


def having(lines, **fields):
    return [r for r in lines if all(r.get(k) == v for k, v in fields.items())]


def one(lines, **fields):
    found = having(lines, **fields)
    assert len(found) == 1, f"expected one line with {fields}, found {len(found)}: {found}"
    return found[0]


def wait_event(process, timeout=20.0, **fields):
    return wait_until(lambda: having(json_lines(process), **fields), timeout,
                      f"a line with {fields} in {process.name}'s log")[0]


def test_json_logs_carry_job_and_worker_fields_and_the_backlog_shows_in_metrics(cluster):
    orch = cluster.orchestrator(extra=JSON)
    worker = cluster.worker(orch, "logs-1", command=["sh", "-c", "echo built $BLACKTREE_JOB_ID"], region="eu",
                            labels=["pool=a"], extra=JSON)
    orch.wait_workers(lambda ws: "logs-1" in ws and ws["logs-1"].state == FREE, what="logs-1 free")

    orch.submit(job("ok-1"))
    assert orch.status_of("ok-1")["success"] is True
    # An invalid job (its id breaks the jobId rule) is dead-lettered: a line of
    # JSON too, with the reason, and its id is not echoed into any field.
    orch.submit(job('odd "1" \\ {"event":"x"}\nnext'))
    bad = wait_event(orch, event="job.dead_lettered")
    assert "jobId" in bad["reason"] and "job_id" not in bad and bad["outcome"] == "dead_lettered"
    # Labels no live worker offers: it waits for one (300 s by default).
    orch.submit(job("stuck-1", region="mars", labels={"pool": "x"}))
    wait_event(orch, event="job.received", job_id="stuck-1")
    metrics = wait_until(lambda: (lambda m: m if m.get('blacktree_jobs_waiting{labels="pool=x,region=mars"}') == 1
                                  else None)(orch.metrics()), what="the waiting job in /metrics")
    assert metrics['blacktree_job_oldest_waiting_seconds{labels="pool=x,region=mars"}'] >= 0
    assert not [k for k in metrics if k.startswith("blacktree_jobs_waiting{") and "mars" not in k], metrics
    assert metrics["blacktree_job_queue_wait_seconds_count"] == 1  # the placed job's placement wait

    # The worker drains, deregisters and exits; then the orchestrator stops,
    # handing the waiting job back: every line of both logs is there.
    assert worker.terminate() == 0
    orch.wait_workers(lambda ws: "logs-1" not in ws, what="logs-1 deregistered")
    wait_event(orch, event="worker.deregistered", worker_id="logs-1")
    assert orch.terminate() == 0
    o = json_lines(orch)
    w = json_lines(worker)
    assert {r["logger"] for r in o} == {"orchestrator"} and {r["logger"] for r in w} == {"worker"}

    # The orchestrator: the job's lines, by field.
    assert one(o, event="job.received", job_id="ok-1")["phase"] == "waiting"
    assigned = one(o, event="job.assigned", job_id="ok-1")
    assert assigned["worker_id"] == "logs-1" and assigned["phase"] == "running"
    assert "job ok-1 assigned to worker logs-1" in assigned["msg"]  # the text, as it always was
    finished = one(o, event="job.finished", job_id="ok-1")
    assert (finished["worker_id"], finished["outcome"], finished["phase"]) == ("logs-1", "succeeded", "finished")
    assert not having(o, event="job.assigned", job_id="stuck-1")
    assert one(o, event="job.handed_back", job_id="stuck-1")["phase"] == "requeued"
    for record in having(o, job_id="ok-1") + having(o, job_id="stuck-1"):
        assert record["event"].startswith("job.")

    # The orchestrator: each change of the worker's state is one line with its reason.
    lifecycle = [r for r in o if r.get("event") in LIFECYCLE and r.get("worker_id") == "logs-1"]
    assert [(r["event"], r.get("from"), r["state"]) for r in lifecycle][:2] == [
        ("worker.registered", None, "registering"), ("worker.alive", "registering", "free")], lifecycle
    assert lifecycle[-1]["event"] == "worker.deregistered" and lifecycle[-1]["state"] == "removed"
    for record in lifecycle:
        assert record["reason"], record
    for before, after in zip(lifecycle, lifecycle[1:]):
        assert before.get("state") != after.get("state"), f"one change logged twice: {before} {after}"
    # free <-> busy is not a lifecycle change.
    assert not [r for r in lifecycle if r.get("state") == "busy" or r.get("from") == "busy"], lifecycle

    # The worker: its registration, the job, its drain.
    registered = one(w, event="worker.registered")
    assert registered["worker_id"] == "logs-1" and "registered with orchestrator" in registered["reason"]
    accepted = one(w, event="job.accepted", job_id="ok-1")
    assert accepted["worker_id"] == "logs-1" and accepted["phase"] == "running"
    done = one(w, event="job.finished", job_id="ok-1")
    assert (done["worker_id"], done["outcome"]) == ("logs-1", "succeeded")
    assert one(w, event="worker.draining")["reason"]
    assert one(w, event="worker.deregistered")["worker_id"] == "logs-1"
    assert one(w, event="worker.stopped")["state"] == "stopped"


def test_a_dead_worker_is_one_line_and_forgetting_it_another(cluster):
    orch = cluster.orchestrator(extra=(*JSON, "--forget-dead-after-s", "1"))
    worker = cluster.worker(orch, "doomed-1", extra=JSON)
    orch.wait_workers(lambda ws: "doomed-1" in ws and ws["doomed-1"].state == FREE, what="doomed-1 free")

    worker.kill9()
    forgotten = wait_event(orch, event="worker.forgotten", worker_id="doomed-1")
    assert forgotten["state"] == "removed" and forgotten["from"] == "dead"
    assert forgotten["reason"].startswith("dead for more than")
    assert "worker doomed-1 forgotten" in forgotten["msg"]
    o = json_lines(orch)
    dead = one(o, event="worker.dead", worker_id="doomed-1")
    assert (dead["from"], dead["state"], dead["level"]) == ("free", "dead", "warning")
    assert "missed" in dead["reason"]
    # The missed pings themselves are debug lines of their own, with the error.
    assert having(o, event="worker.ping_failed", worker_id="doomed-1")[0]["reason"]
    assert len(having(o, worker_id="doomed-1", state="dead")) == 1


class HangingUpBroker:
    """A TCP listener that reads each client's protocol header and hangs up:
    every AMQP connection to it fails the same way, and the test can count
    the attempts (the retries a log line must not repeat)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.attempts = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(8)  # "AMQP\0\0\x09\x01": read, so the close is a clean end of stream
                except OSError:
                    pass
            self.attempts += 1

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.sock.close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def hanging_up_broker():
    broker = HangingUpBroker()
    yield broker
    broker.close()


def test_each_broker_connection_error_is_one_line_with_its_reason(cluster, hanging_up_broker):
    url = f"amqp://guest:guest@127.0.0.1:{hanging_up_broker.port}/"
    orch = cluster.orchestrator(amqp={"mq-url": url}, extra=JSON)
    connections = {"source", "status", "events", "cancels"}

    def errors():
        return [r for r in json_lines(orch) if r.get("event") == "broker.connection"]

    wait_until(lambda: connections <= {r.get("connection") for r in errors()}, timeout=30,
               what="an error line from each broker connection")
    # Four connections retrying with backoff (0.1 s, doubling): three tries
    # each on average before the log is read.
    wait_until(lambda: hanging_up_broker.attempts >= 12, timeout=30, what="the connections retrying")
    code, body = orch.http_get("/healthz")
    assert code == 503 and "not connected to the broker" in body
    lines = errors()
    for record in lines:
        assert record["level"] == "error" and record["reason"], record
        assert record["msg"] == f"amqp {record['connection']}: {record['reason']}", record
    pairs = [(r["connection"], r["reason"]) for r in lines]
    assert len(pairs) == len(set(pairs)), f"an error logged more than once: {pairs}"
    assert orch.terminate() == 0
    json_lines(orch)  # the drain and stop lines too
