# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 3: the orchestrator and real worker processes over gRPC on loopback.

Jobs come in through the orchestrator's stdio queue (JobRequest JSON lines)
so these tests need no broker; the workers run the argv runner with real
commands (`true`, `false`, `sh -c ...`)."""

import collections
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from conftest import BIN_DIR, ORCHESTRATOR_NAME, health_status, job, pb, wait_until

FREE = pb.WORKER_STATE_FREE
DEAD = pb.WORKER_STATE_DEAD



def marking_starts(script, marks):
    """`script` under sh, first appending the job's id to the file `marks`: a
    test waits on that to know the job runs on the worker, not only that the
    orchestrator assigned it (an offer can still be refused)."""
    return ["sh", "-c", f'echo "$BLACKTREE_JOB_ID" >> "$0"; {script}', str(marks)]


def started(marks, *job_ids):
    return marks.exists() and set(job_ids) <= set(marks.read_text().split())


def test_workers_register_and_serve_health(cluster):
    orch = cluster.orchestrator()
    workers = [cluster.worker(orch, f"w{i}", region=region, labels=[f"pool=p{i}"])
               for i, region in enumerate(["eu", "eu", "us"])]

    listed = orch.wait_workers(lambda ws: len(ws) == 3 and all(w.state == FREE for w in ws.values()),
                               what="three free workers")
    assert set(listed) == {"w0", "w1", "w2"}
    assert dict(listed["w2"].worker.labels) == {"region": "us", "pool": "p2"}
    assert listed["w0"].worker.capacity == 1
    assert listed["w0"].worker.address == f"127.0.0.1:{workers[0].port}"

    # A real grpc.health.v1 client: every process reports SERVING.
    from grpc_health.v1 import health_pb2
    for port in [orch.port] + [w.port for w in workers]:
        assert health_status(port, orch.admin) == health_pb2.HealthCheckResponse.SERVING


def test_jobs_flow_and_region_is_respected(cluster):
    orch = cluster.orchestrator()
    cluster.worker(orch, "eu-1", command=["sh", "-c", "echo ran $BLACKTREE_JOB_ID"], region="eu")
    cluster.worker(orch, "us-1", command=["sh", "-c", "echo ran $BLACKTREE_JOB_ID"], region="us", capacity=2)
    orch.wait_workers(lambda ws: len(ws) == 2 and all(w.state == FREE for w in ws.values()))

    for i in range(6):
        orch.submit(job(f"eu-job-{i}", region="eu"))
        orch.submit(job(f"any-job-{i}"))
    orch.submit(job("fails", region="us", labels={"region": "us"}))
    statuses = orch.wait_statuses(13)

    by_id = collections.Counter(s["jobId"] for s in statuses)
    assert all(count == 1 for count in by_id.values()), by_id
    for s in statuses:
        if s["jobId"].startswith("eu-job-"):
            assert s["workerId"] == "eu-1", s
            assert s["success"] and f"ran {s['jobId']}" in s["logs"]
    assert {s["workerId"] for s in statuses if s["jobId"].startswith("any-job-")} <= {"eu-1", "us-1"}
    # Every status carries the seed's five fields.
    for s in statuses:
        assert {"jobId", "success", "logs", "imageUrl", "error"} <= s.keys()


def test_failed_job_is_reported_not_rerun(cluster):
    orch = cluster.orchestrator(extra=["--log-level", "debug"])  # job.assigned is a debug line
    cluster.worker(orch, "w-false", command=["sh", "-c", "echo attempt; exit 3"])
    orch.wait_workers(lambda ws: ws.get("w-false") and ws["w-false"].state == FREE)
    orch.submit(job("bad"))
    status = orch.status_of("bad")
    assert status["success"] is False
    assert "exited with code 3" in status["error"]
    assert "attempt" in status["logs"]
    # Ran exactly once: the control plane owns retries.
    assert status["attempts"] == 1
    assert orch.log().count("job bad assigned") == 1


def test_worker_killed_mid_job_is_reported_lost_and_avoided(cluster, tmp_path):
    marks = tmp_path / "started"
    orch = cluster.orchestrator(extra=["--log-level", "debug"])  # job.assigned is a debug line
    slow = cluster.worker(orch, "slow", command=marking_starts("echo started; sleep 60", marks))
    orch.wait_workers(lambda ws: ws.get("slow") and ws["slow"].state == FREE)

    orch.submit(job("doomed"))
    orch.wait_log("job doomed assigned to worker slow")
    wait_until(lambda: started(marks, "doomed"), what="the job running on 'slow'")
    slow.kill9()

    status = orch.status_of("doomed", timeout=10)
    assert status["success"] is False
    assert "lost" in status["error"] and "slow" in status["error"], status
    # Dead within two ping intervals (300 ms each, plus the ping deadline).
    orch.wait_workers(lambda ws: ws["slow"].state == DEAD, timeout=3, what="'slow' marked dead")

    # A new worker takes new jobs; the dead one gets none.
    cluster.worker(orch, "fresh", command=["true"])
    orch.wait_workers(lambda ws: ws.get("fresh") and ws["fresh"].state == FREE)
    for i in range(3):
        orch.submit(job(f"after-{i}"))
    for i in range(3):
        assert orch.status_of(f"after-{i}")["workerId"] == "fresh"

    # The same id comes back (a new process): it is used again.
    cluster.worker(orch, "slow", command=["true"], port=slow.port)
    orch.wait_workers(lambda ws: ws["slow"].state == FREE, what="'slow' free again")
    for i in range(6):
        orch.submit(job(f"again-{i}"))
    statuses = [orch.status_of(f"again-{i}") for i in range(6)]
    assert "slow" in {s["workerId"] for s in statuses}


def test_orchestrator_restart_workers_come_back(cluster, tmp_path):
    orch = cluster.orchestrator()
    port = orch.port
    cluster.worker(orch, "a", command=["true"])
    cluster.worker(orch, "b", command=["true"])
    orch.wait_workers(lambda ws: len(ws) == 2 and all(w.state == FREE for w in ws.values()))
    orch.kill9()

    again = cluster.orchestrator(port=port, name="orchestrator-2")
    again.wait_workers(lambda ws: len(ws) == 2 and all(w.state == FREE for w in ws.values()), timeout=15,
                       what="both workers registered again by themselves")
    for i in range(4):
        again.submit(job(f"post-restart-{i}"))
    assert all(again.status_of(f"post-restart-{i}")["success"] for i in range(4))


def test_unreachable_worker_job_goes_elsewhere(cluster):
    # Slow pings, so the orchestrator still believes in the killed worker
    # when it offers it a job.
    orch = cluster.orchestrator(ping_interval_ms=5000, ping_timeout_ms=1000)
    gone = cluster.worker(orch, "gone", command=["true"])
    cluster.worker(orch, "stays", command=["sh", "-c", "sleep 0.2"])
    orch.wait_workers(lambda ws: len(ws) == 2 and all(w.state == FREE for w in ws.values()))
    gone.kill9()

    for i in range(4):
        orch.submit(job(f"j{i}"))
    statuses = [orch.status_of(f"j{i}") for i in range(4)]
    assert all(s["success"] and s["workerId"] == "stays" for s in statuses), statuses
    assert "not accepted by worker gone" in orch.log()
    assert len(orch.results()) == 4  # exactly one status each
    assert max(s["attempts"] for s in statuses) == 2


def test_full_worker_refuses_and_job_goes_elsewhere(cluster, certs):
    orch = cluster.orchestrator()
    # --insecure: the stale registration below, made with 'small's own
    # certificate, issues a registration secret 'small' never sees; this test
    # is about a full worker, so 'small' obeys the orchestrator's certificate alone.
    small = cluster.worker(orch, "small", command=["sh", "-c", "sleep 1"], capacity=1, insecure=True)
    cluster.worker(orch, "big", command=["sh", "-c", "sleep 1"], capacity=4)
    listed = orch.wait_workers(lambda ws: len(ws) == 2 and all(w.state == FREE for w in ws.values()))
    # A stale registration claims 'small' has 3 slots (same process, same
    # incarnation): the orchestrator will offer it more than it can take.
    stale = pb.WorkerInfo()
    stale.CopyFrom(listed["small"].worker)
    stale.capacity = 3
    orch.register(stale, identity=certs.identity("small"))
    orch.wait_workers(lambda ws: ws["small"].worker.capacity == 3)

    for i in range(7):
        orch.submit(job(f"r{i}"))
    statuses = [orch.status_of(f"r{i}") for i in range(7)]
    failed = [(s.get("jobId"), s.get("workerId"), s.get("error"), s.get("logs", "")[-300:])
              for s in statuses if not s["success"]]
    assert all(s["success"] for s in statuses), failed
    assert len(orch.results()) == 7
    assert "is full" in orch.log()
    assert small.proc.poll() is None


def test_wrong_registration_token_is_refused(cluster):
    orch = cluster.orchestrator(token="s3cret-registration-token")
    bad = cluster.worker(orch, "intruder", command=["true"], token="wrong-token")
    bad.wait_log("registration token is wrong")
    cluster.worker(orch, "friend", command=["true"])
    listed = orch.wait_workers(lambda ws: "friend" in ws)
    assert "intruder" not in listed
    # Without the token even listing is refused.
    with pytest.raises(grpc.RpcError) as refused:
        orch.list_workers(token="")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for p in (orch, bad):
        assert "s3cret-registration-token" not in p.log()
        assert "wrong-token" not in p.log()


def test_worker_sigterm_drains_then_deregisters(cluster, tmp_path):
    marks = tmp_path / "started"
    orch = cluster.orchestrator()
    w = cluster.worker(orch, "drainer", command=marking_starts("sleep 2; echo finished", marks))
    orch.wait_workers(lambda ws: ws.get("drainer") and ws["drainer"].state == FREE)
    orch.submit(job("in-flight"))
    wait_until(lambda: started(marks, "in-flight"), what="the job running")
    w.proc.send_signal(signal.SIGTERM)
    # The orchestrator learns from the pings that the worker is draining and
    # offers it nothing new: the next job goes to another worker, first try.
    orch.wait_workers(lambda ws: ws["drainer"].state == pb.WORKER_STATE_DRAINING, what="'drainer' draining")
    cluster.worker(orch, "other", command=["true"])
    orch.submit(job("next"))
    nxt = orch.status_of("next")
    assert nxt["workerId"] == "other" and nxt["attempts"] == 1, nxt
    assert w.proc.wait(timeout=30) == 0
    status = orch.status_of("in-flight")
    assert status["success"] and "finished" in status["logs"]
    orch.wait_workers(lambda ws: "drainer" not in ws, what="'drainer' deregistered")


def test_cancel_rpc_stops_a_running_job(cluster, certs, tmp_path):
    marks = tmp_path / "started"
    orch = cluster.orchestrator()
    # --insecure: this test is about Cancel itself, so the worker obeys the
    # orchestrator's certificate without the registration secret the test
    # cannot know (test_security.py has the refusals).
    w = cluster.worker(orch, "canceller", command=marking_starts("echo going; sleep 60", marks),
                       insecure=True)
    orch.wait_workers(lambda ws: ws.get("canceller") and ws["canceller"].state == FREE)
    orch.submit(job("to-cancel"))
    wait_until(lambda: started(marks, "to-cancel"), what="the job running")
    as_orchestrator = certs.identity(ORCHESTRATOR_NAME).channel_credentials()
    with grpc.secure_channel(f"127.0.0.1:{w.port}", as_orchestrator) as ch:
        cancel = ch.unary_unary("/blacktree.v1.Worker/Cancel",
                                request_serializer=pb.CancelRequest.SerializeToString,
                                response_deserializer=pb.CancelReply.FromString)
        assert cancel(pb.CancelRequest(job_id="to-cancel", reason="test"), timeout=5).found
        assert not cancel(pb.CancelRequest(job_id="no-such-job"), timeout=5).found
    status = orch.status_of("to-cancel", timeout=15)
    assert status["success"] is False and "cancel" in status["error"], status
    orch.wait_workers(lambda ws: ws["canceller"].running == 0 and ws["canceller"].state == FREE)


def test_worker_configuration_layers(cluster, tmp_path):
    """flags > environment > YAML file > defaults, with the seed's names."""
    orch = cluster.orchestrator()
    config = tmp_path / "worker.yaml"
    config.write_text("region: from-file\ncapacity: 3\nlabel: [tier=file]\nworker_id: file-id\n")
    # The environment overrides the file's capacity; flags override its region and id.
    w = cluster.worker(orch, "flag-id", command=["true"], region="from-flag",
                       extra=["--config", str(config)], env={"WORKER_CAPACITY": "2"})
    listed = orch.wait_workers(lambda ws: "flag-id" in ws, what="the configured worker")
    info = listed["flag-id"].worker
    assert info.capacity == 2
    assert dict(info.labels) == {"region": "from-flag", "tier": "file"}
    assert w.proc.poll() is None

    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_setting: 1\n")
    out = subprocess.run([str(BIN_DIR / "blacktree-worker"), "--config", str(bad), "--", "true"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "no_such_setting" in (out.stdout + out.stderr).replace("-", "_")


def test_dead_workers_are_forgotten_after_a_while(cluster):
    orch = cluster.orchestrator(extra=["--forget-dead-after-s", "1"])
    w = cluster.worker(orch, "crashy", command=["true"])
    orch.wait_workers(lambda ws: ws.get("crashy") and ws["crashy"].state == FREE)
    w.kill9()
    orch.wait_workers(lambda ws: "crashy" in ws and ws["crashy"].state == DEAD, what="'crashy' dead")
    orch.wait_workers(lambda ws: "crashy" not in ws, timeout=10, what="'crashy' forgotten")
    orch.wait_log("worker crashy forgotten")


def test_noop_runner_succeeds_at_once(cluster):
    orch = cluster.orchestrator()
    cluster.worker(orch, "noop", command=[], extra=["--runner", "noop"])
    orch.wait_workers(lambda ws: ws.get("noop") and ws["noop"].state == FREE)
    orch.submit(job("nothing-to-do"))
    status = orch.status_of("nothing-to-do")
    assert status["success"] and status["workerId"] == "noop" and status["logs"] == ""


def job_threads(worker):
    """How many of the worker process's threads are job threads (named so by the service)."""
    names = []
    for task in Path(f"/proc/{worker.proc.pid}/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:  # the thread ended meanwhile
            pass
    return names.count("blacktree-job")


def test_noop_jobs_run_on_grpc_threads_and_others_on_job_threads(cluster):
    # The noop runner returns at once, so its jobs run where the worker learns
    # they were taken, and the worker starts no job threads at all; a runner
    # that blocks (argv) gets its capacity's threads, plus one.
    orch = cluster.orchestrator()
    noop = cluster.worker(orch, "quick", command=[], extra=["--runner", "noop"], region="eu", capacity=3)
    argv = cluster.worker(orch, "slow", command=["true"], region="us", capacity=3)
    orch.wait_workers(lambda ws: all(ws.get(w) and ws[w].state == FREE for w in ("quick", "slow")))
    for n in range(6):
        orch.submit(job(f"spread-{n}", region="eu" if n % 2 else "us"))
    ran_on = [orch.status_of(f"spread-{n}")["workerId"] for n in range(6)]
    assert ran_on == ["slow", "quick"] * 3, ran_on
    assert job_threads(noop) == 0
    assert job_threads(argv) == 4


def test_worker_serves_health_and_metrics_of_its_jobs(cluster, tmp_path):
    orch = cluster.orchestrator()
    # Each job prints two lines and leaves a daemon behind, which the worker kills.
    w = cluster.worker(orch, "metered", command=["sh", "-c", "echo hello; echo world; sleep 600 &"], http=True)
    orch.wait_workers(lambda ws: ws.get("metered") and ws["metered"].state == FREE)
    wait_until(lambda: w.http_get("/healthz")[0] == 200, what="the worker ready once registered")
    for i in range(3):
        orch.submit(job(f"metered-{i}"))
    for i in range(3):
        assert orch.status_of(f"metered-{i}")["success"]
    m = w.metrics()
    assert m['blacktree_worker_jobs_total{outcome="succeeded"}'] == 3
    assert m['blacktree_worker_jobs_total{outcome="failed"}'] == 0
    assert m["blacktree_worker_job_duration_seconds_count"] == 3
    assert m["blacktree_worker_jobs_running"] == 0
    assert m["blacktree_worker_log_bytes_total"] == 3 * len("helloworld")
    # Counted where jobs run in cgroups (the worker logs which containment it has).
    cgroup = "contained by cgroup" in w.log()
    assert m["blacktree_worker_leftover_processes_killed_total"] == (3 if cgroup else 0)
    status, text = w.http_get("/healthz")
    assert status == 200 and text.startswith("ok")


def test_jobs_waiting_for_a_worker_are_placed_by_priority(cluster, tmp_path):
    # The orchestrator holds jobs that wait for a worker with their labels
    # while other workers are idle (it takes them from the queue so that the
    # idle ones are not starved); among those, the higher priority goes first.
    orch = cluster.orchestrator()
    log = tmp_path / "runs.log"
    # --label right before the command's `--` (its `-c` once read as a flag).
    cluster.worker(orch, "labelled", capacity=1, labels=["pool=x"],
                   command=["sh", "-c", f'echo "$BLACKTREE_JOB_ID" >> {log}; sleep 1'])
    cluster.worker(orch, "idle", capacity=1)
    orch.wait_workers(lambda ws: all(ws.get(w) and ws[w].state == FREE for w in ("labelled", "idle")))
    pool_x = {"labels": {"pool": "x"}}
    orch.submit(job("blocker", **pool_x))
    wait_until(lambda: log.exists() and "blocker" in log.read_text(), what="the blocker running")
    # Queued behind it in this order; placed highest first, FIFO among equals.
    for job_id, priority in [("p0", 0), ("p5-first", 5), ("p9", 9), ("p5-second", 5), ("none", None), ("p1", 1)]:
        orch.submit(job(job_id, **pool_x) if priority is None else job(job_id, priority=priority, **pool_x))
    orch.submit(job("too-high", priority=10))
    bad = orch.status_of("too-high")
    assert not bad["success"] and "priority is 10: it must be 0 to 9" in bad["error"]
    orch.wait_statuses(8, timeout=60)
    assert log.read_text().split() == ["blocker", "p9", "p5-first", "p5-second", "p1", "p0", "none"]


# --- issue 12: delivery under faults ------------------------------------------

def runner_log_command(log, body="sleep 1"):
    """An argv command that logs its start and end per job id to `log`."""
    return ["sh", "-c", f'echo "start $BLACKTREE_JOB_ID" >> {log}; {body}; echo "end $BLACKTREE_JOB_ID" >> {log}; '
                        f'echo "done $BLACKTREE_JOB_ID"']


def test_a_job_delivered_again_while_it_runs_is_attached_to_its_run(cluster, tmp_path):
    runs = tmp_path / "runs.log"
    orch = cluster.orchestrator()
    cluster.worker(orch, "once", command=runner_log_command(runs, "sleep 1.5"), capacity=2)
    orch.wait_workers(lambda ws: ws.get("once") and ws["once"].state == FREE)
    # The same job delivered twice (as a broker redelivers it after a lost
    # connection): the second delivery must not start a second run; it is
    # settled with the first, under its one status.
    orch.submit(job("twice"))
    wait_until(lambda: runs.exists() and "start twice" in runs.read_text(), what="the first run started")
    orch.submit(job("twice"))
    wait_until(lambda: orch.metrics().get("blacktree_job_duplicates_total") == 1, what="the duplicate counted")
    status = orch.status_of("twice", timeout=30)
    assert status["success"] and "done twice" in status["logs"], status
    wait_until(lambda: orch.metrics().get("blacktree_jobs_in_flight") == 0, what="both deliveries settled")
    # Statuses come out in order: once the next job's is out, a second one
    # for "twice" would have been seen.
    orch.submit(job("after"))
    orch.status_of("after", timeout=30)
    assert [s["jobId"] for s in orch.results()].count("twice") == 1, orch.results()
    assert runs.read_text().count("start twice") == 1, runs.read_text()


def test_output_that_is_not_utf8_never_silences_the_worker(cluster):
    orch = cluster.orchestrator()
    # Invalid UTF-8 in a line, and a last line cut inside a character.
    w = cluster.worker(orch, "bytes", command=["sh", "-c", r"printf 'before \377\376 after\n'; printf 'cut \342\202'"])
    orch.wait_workers(lambda ws: ws.get("bytes") and ws["bytes"].state == FREE)
    for name in ("first", "second"):
        orch.submit(job(name))
        status = orch.status_of(name, timeout=20)
        assert status["success"] and status["workerId"] == "bytes", status
        assert "before \ufffd\ufffd after" in status["logs"] and "cut \ufffd" in status["logs"], status
    assert w.proc.poll() is None


def test_worker_sigterm_delivers_the_real_status_of_chatty_jobs(cluster, tmp_path):
    marks = tmp_path / "started"
    orch = cluster.orchestrator()
    w = cluster.worker(orch, "chatty", capacity=4, command=marking_starts(
        'sleep 1; seq -f "chatty line %g of $BLACKTREE_JOB_ID" 1 200000; echo pushed', marks))
    orch.wait_workers(lambda ws: ws.get("chatty") and ws["chatty"].state == FREE)
    for i in range(4):
        orch.submit(job(f"chatty-{i}"))
    # Running on the worker, not only assigned: an offer that reaches a
    # draining worker is refused and waits for another worker instead.
    wait_until(lambda: started(marks, *(f"chatty-{i}" for i in range(4))), what="four jobs running")
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(timeout=60) == 0
    for i in range(4):
        status = orch.status_of(f"chatty-{i}", timeout=20)
        assert status["success"] and "pushed" in status["logs"], (status["error"], status["logs"][-200:])
    orch.wait_workers(lambda ws: "chatty" not in ws, what="'chatty' deregistered")


def test_a_second_worker_with_the_same_id_is_refused(cluster, tmp_path):
    runs = tmp_path / "runs.log"
    orch = cluster.orchestrator()
    first = cluster.worker(orch, "twin", command=runner_log_command(runs, "sleep 0.2"))
    orch.wait_workers(lambda ws: ws.get("twin") and ws["twin"].state == FREE)
    second = cluster.worker(orch, "twin", command=runner_log_command(runs, "sleep 0.2"), name="twin-2")
    second.wait_log("another live worker")
    # The first keeps its registration and its jobs; nothing flaps.
    for i in range(6):
        orch.submit(job(f"twin-job-{i}"))
    statuses = [orch.status_of(f"twin-job-{i}") for i in range(6)]
    assert all(s["success"] for s in statuses), statuses
    assert orch.list_workers()["twin"].worker.address == f"127.0.0.1:{first.port}"
    assert "twin registered again" not in orch.log()
    assert "lost" not in orch.log()
    assert first.proc.poll() is None and second.proc.poll() is None
    # When the first goes away, the second takes over the id.
    first.terminate()
    orch.wait_workers(lambda ws: ws.get("twin") and ws["twin"].worker.address == f"127.0.0.1:{second.port}"
                      and ws["twin"].state == FREE, timeout=30, what="the second 'twin' registered")


def test_a_slow_offer_does_not_mark_the_worker_dead(cluster):
    # Pings are patient; the offer is not.
    orch = cluster.orchestrator(ping_interval_ms=2000, ping_timeout_ms=1500,
                                extra=["--accept-timeout-ms", "300", "--max-attempts", "10"])
    w = cluster.worker(orch, "slowpoke", command=["sh", "-c", "echo ok"])
    orch.wait_workers(lambda ws: ws.get("slowpoke") and ws["slowpoke"].state == FREE)
    w.proc.send_signal(signal.SIGSTOP)
    try:
        orch.submit(job("patient"))
        orch.wait_log("not accepted by worker slowpoke")
    finally:
        w.proc.send_signal(signal.SIGCONT)
    status = orch.status_of("patient", timeout=30)
    assert status["success"] and status["workerId"] == "slowpoke", status
    assert "slowpoke is dead" not in orch.log()
    assert orch.list_workers()["slowpoke"].state != DEAD


def test_a_stream_without_heartbeats_is_lost_and_a_quiet_one_is_not(cluster, tmp_path):
    marks = tmp_path / "started"
    # Plaintext (--insecure), so that the test can ask the worker itself what it runs.
    orch = cluster.orchestrator(ping_interval_ms=5000, ping_timeout_ms=4000, ping_misses=5, tls=None,
                                extra=["--heartbeat-timeout-ms", "600"])
    w = cluster.worker(orch, "beating", command=marking_starts("sleep 2; echo quiet but alive", marks),
                       extra=["--heartbeat-interval-ms", "100"])
    orch.wait_workers(lambda ws: ws.get("beating") and ws["beating"].state == FREE)
    # Quiet for longer than the timeout: the heartbeats carry it.
    orch.submit(job("quiet"))
    status = orch.status_of("quiet", timeout=20)
    assert status["success"] and "quiet but alive" in status["logs"], status

    # A stream that carries nothing (the worker frozen) is reported lost long
    # before the run deadline, and the job is cancelled on the worker.
    orch.submit(job("frozen"))
    wait_until(lambda: started(marks, "frozen"), what="the job running")
    w.proc.send_signal(signal.SIGSTOP)
    try:
        status = orch.status_of("frozen", timeout=20)
    finally:
        w.proc.send_signal(signal.SIGCONT)
    assert not status["success"] and "heartbeat" in status["error"], status

    def worker_runs_nothing():
        with grpc.insecure_channel(f"127.0.0.1:{w.port}") as ch:
            ping = ch.unary_unary("/blacktree.v1.Worker/Ping", request_serializer=pb.PingRequest.SerializeToString,
                                  response_deserializer=pb.PingReply.FromString)
            return not ping(pb.PingRequest(), timeout=5).running_jobs
    wait_until(worker_runs_nothing, what="the frozen job cancelled on the worker")
    assert orch.list_workers()["beating"].state != DEAD
