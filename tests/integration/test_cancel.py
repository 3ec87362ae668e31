# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 16: cancel a job, through the real processes. `blacktree cancel JOBID`
(or a control plane's {"jobId": ...} on the cancel queue) reaches a real
orchestrator on a real rabbitmq-server: a job waiting for a worker is settled
cancelled without running, a running one is stopped on its worker (its
processes gone), a finished one is left alone, and a cancel that comes before
its job stops it on arrival. Every job gets exactly one status. A real buildah
build is cancelled too (the whole stack of scripts/stack.sh)."""

import json
import os
import random
import re
import subprocess
import urllib.request
from pathlib import Path

import pika
import pytest

from conftest import BIN_DIR, job, wait_until
from test_amqp_e2e import StatusCollector, amqp_flags, broker, drain, names, publish  # noqa: F401
from test_main_job import ROOT, read_env, shell_env, stack_dir  # noqa: F401

FREE = 2  # WorkerState FREE


def processes_with_arg(arg, program=None):
    """PIDs of the processes with `arg` among their arguments (from /proc),
    only those running `program` (argv[0]) when it is given."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if arg.encode() in argv and (program is None or argv[0] == program.encode()):
            found.append(int(entry.name))
    return found


def alive(pid):
    """The process `pid`, if it is there and not a zombie: its /proc stat line."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else stat


def job_dir_processes(stack_dir):
    """The command lines of the live processes (other than the workers) that
    name a worker's job directory (under the stack's jobs-<region>)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (entry.name.isdigit() and not argv[0].endswith(b"blacktree-worker") and alive(entry.name)
                and any(str(stack_dir / "jobs-").encode() in a for a in argv)):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def cancel(mq_url, queue, job_id, reason=None, timeout=30):
    argv = [str(BIN_DIR / "blacktree"), "cancel", job_id, "--mq-url", mq_url, "--cancel-queue", queue]
    if reason:
        argv += ["--reason", reason]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def farm(cluster, broker, names, tmp_path):  # noqa: F811
    """An orchestrator on the broker with its own cancel queue, one worker of
    capacity 1 whose jobs append their id to `marks` and then run
    `sleep <secs>` under a shell whose $0 is a marker of this test."""
    names = dict(names, **{"cancel-queue": names["execute-queue"].replace("execute", "cancel")})
    orch = cluster.orchestrator(amqp=amqp_flags(broker, names))
    marks = tmp_path / "started"
    secs = str(random.randint(2000, 9000))  # a sleep only this test runs
    script = f'echo "$BLACKTREE_JOB_ID" >> "$0"; case $BLACKTREE_JOB_ID in quick*) exit 0;; esac; sleep {secs}'
    cluster.worker(orch, "w-cancel", command=["sh", "-c", script, str(marks)], capacity=1, labels=["pool=a"])
    # Free while w-cancel is busy, so the orchestrator takes a second pool=a
    # job from the broker, which then waits for w-cancel.
    cluster.worker(orch, "w-other", command=["true"], capacity=1, labels=["pool=b"])
    orch.wait_workers(lambda ws: all(ws.get(w) and ws[w].state == FREE for w in ("w-cancel", "w-other")),
                      what="the workers free")
    statuses = StatusCollector(broker, names["status-queue"])
    yield {"orch": orch, "names": names, "marks": marks, "secs": secs, "statuses": statuses, "broker": broker}
    statuses.close()


def ran(farm, job_id):
    return farm["marks"].exists() and job_id in farm["marks"].read_text().split()


def status_of(farm, job_id, timeout=30):
    def one():
        with farm["statuses"].lock:
            return next((s for s in farm["statuses"].statuses if s["jobId"] == job_id), None)
    return wait_until(one, timeout, f"a status for {job_id}")


@pytest.mark.timeout(120)
def test_cancel_a_waiting_job_then_the_running_one(farm):
    orch, names = farm["orch"], farm["names"]
    publish(farm["broker"], names["execute-queue"],
            [json.dumps(job("runs", labels={"pool": "a"})), json.dumps(job("waits", labels={"pool": "a"}))])
    wait_until(lambda: ran(farm, "runs"), what="the first job running on the worker")
    wait_until(lambda: orch.metrics()["blacktree_jobs_in_flight"] == 2, what="the second job waiting")

    done = cancel(farm["broker"].url, names["cancel-queue"], "waits", reason="superseded by a newer commit")
    assert done.returncode == 0, done.stderr
    assert "cancel of job waits queued" in done.stderr
    waited = status_of(farm, "waits")
    assert waited["success"] is False and waited["cancelled"] is True, waited
    assert "cancelled before it ran" in waited["error"] and "superseded by a newer commit" in waited["error"]
    assert not ran(farm, "waits")

    sleeping = wait_until(lambda: processes_with_arg(str(farm["marks"]), "sh"), what="the running job's shell")
    assert cancel(farm["broker"].url, names["cancel-queue"], "runs").returncode == 0
    stopped = status_of(farm, "runs")
    assert stopped["success"] is False and stopped["cancelled"] is True, stopped
    assert "cancelled while running on worker w-cancel" in stopped["error"]
    # The job's processes are gone: its shell and its sleep.
    assert not [alive(pid) for pid in sleeping if alive(pid)]
    assert not processes_with_arg(str(farm["marks"]), "sh") and not processes_with_arg(farm["secs"], "sleep")
    orch.wait_workers(lambda ws: ws["w-cancel"].running == 0 and ws["w-cancel"].state == FREE,
                      what="the worker free again")
    # Exactly one status each; the broker holds nothing unacked.
    assert farm["statuses"].ids() == {"runs": 1, "waits": 1}
    wait_until(lambda: farm["broker"].unacked(names["execute-queue"]) == 0, what="nothing unacked")
    assert orch.metrics()["blacktree_jobs_cancelled_total"] == 2


@pytest.mark.timeout(120)
def test_cancel_of_a_finished_job_leaves_its_status_alone(farm):
    orch, names = farm["orch"], farm["names"]
    publish(farm["broker"], names["execute-queue"], [json.dumps(job("quick-1"))])
    assert status_of(farm, "quick-1")["success"] is True
    assert cancel(farm["broker"].url, names["cancel-queue"], "quick-1").returncode == 0
    orch.wait_log("cancel of job quick-1: it had already finished; left alone")
    # A later job's status comes after anything the cancel could have caused.
    publish(farm["broker"], names["execute-queue"], [json.dumps(job("quick-2"))])
    status_of(farm, "quick-2")
    assert farm["statuses"].ids() == {"quick-1": 1, "quick-2": 1}
    assert orch.metrics()["blacktree_jobs_cancelled_total"] == 0


@pytest.mark.timeout(120)
def test_a_cancel_published_before_its_job_stops_it_on_arrival(farm):
    orch, names = farm["orch"], farm["names"]
    assert cancel(farm["broker"].url, names["cancel-queue"], "not-yet", reason="changed my mind").returncode == 0
    orch.wait_log("cancel of job not-yet: not seen yet; remembered")
    publish(farm["broker"], names["execute-queue"], [json.dumps(job("not-yet", labels={"pool": "a"}))])
    status = status_of(farm, "not-yet")
    assert status["cancelled"] is True and "changed my mind" in status["error"], status
    assert not ran(farm, "not-yet")
    publish(farm["broker"], names["execute-queue"], [json.dumps(job("quick-after"))])
    assert status_of(farm, "quick-after")["success"] is True
    assert farm["statuses"].ids() == {"not-yet": 1, "quick-after": 1}


@pytest.mark.timeout(120)
def test_a_malformed_cancel_request_is_dead_lettered_with_the_rule(farm):
    orch, names = farm["orch"], farm["names"]
    publish(farm["broker"], names["cancel-queue"], ["not json", json.dumps({"jobId": "bad/id"}),
                                                    json.dumps({"reason": "no id"})])
    dead = wait_until(lambda: (lambda d: d if len(d) >= 3 else None)(drain(farm["broker"], names["dead-letter-queue"])),
                      timeout=30, what="three dead-lettered cancel requests")
    reasons = {body.decode(): props.headers.get("x-blacktree-reason") for props, body in dead}
    assert "not strict JSON" in reasons["not json"]
    assert "jobId" in reasons['{"jobId": "bad/id"}']
    assert "lacks jobId" in reasons['{"reason": "no id"}']
    assert orch.proc.poll() is None
    # The CLI refuses an id the orchestrator would, before reaching the broker.
    refused = cancel("amqp://guest:guest@127.0.0.1:1/", names["cancel-queue"], "bad/id")
    assert refused.returncode == 64 and "JOBID: jobId" in refused.stderr, refused.stderr


@pytest.mark.timeout(600)
def test_cancel_a_real_buildah_build_leaves_no_process(stack_dir):  # noqa: F811
    up = subprocess.run(["bash", str(ROOT / "scripts" / "stack.sh"), "up"], env=shell_env(stack_dir),
                        capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    env = read_env(stack_dir)
    # A repository whose build sleeps in a RUN step, beside the stack's sample app.
    marker = f"blacktree-cancel-{random.randint(10**8, 10**9)}"
    work = stack_dir / "git" / "slow-work"
    work.mkdir(parents=True)
    (work / "Dockerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\n'
        f'RUN ["/bin/busybox", "sh", "-c", "echo building slowly; /bin/busybox sleep 600; true", "{marker}"]\n')
    (work / "busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (work / "busybox").chmod(0o755)
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "slow"]):
        subprocess.run(git + args, check=True, timeout=60)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(stack_dir / "git" / "root" / "demo" / "slow.git")],
                   check=True, timeout=60)
    repo = env["REPO_URL"].replace("sample-app.git", "slow.git")

    cli = str(BIN_DIR / "blacktree")
    cli_env = dict(os.environ, MQ_URL=env["MQ_URL"])
    submitted = subprocess.run([cli, "submit", "--repo", repo, "--image", "demo/slow:cancelled", "--job-id", "slow-1",
                                "--token-file", env["GITHUB_TOKEN_FILE"]], capture_output=True, text=True,
                               timeout=60, env=cli_env)
    assert submitted.returncode == 0, submitted.stderr
    building = wait_until(lambda: processes_with_arg(marker), timeout=180, what="the build's RUN step running")
    assert any(" bud " in p for p in job_dir_processes(stack_dir)), job_dir_processes(stack_dir)

    with pika.BlockingConnection(pika.URLParameters(env["MQ_URL"])) as conn:
        ch = conn.channel()
        ch.queue_declare(queue="status.queue", durable=True)
        done = subprocess.run([cli, "cancel", "slow-1", "--reason", "test"], capture_output=True, text=True,
                              timeout=60, env=cli_env)
        assert done.returncode == 0, done.stderr

        def status():
            method, _, body = ch.basic_get("status.queue", auto_ack=True)
            return json.loads(body) if method else None
        got = wait_until(status, timeout=120, what="the cancelled build's status")
        assert got["jobId"] == "slow-1" and got["success"] is False and got["cancelled"] is True, got
        assert "cancelled while running on worker" in got["error"], got

    # Exactly one status: a status is only ever published for a job in flight,
    # and none is left.
    with urllib.request.urlopen(env["METRICS_URL"], timeout=10) as r:
        metrics = r.read().decode()
    assert re.search(r"^blacktree_jobs_in_flight 0$", metrics, re.M), metrics
    assert re.search(r"^blacktree_jobs_cancelled_total 1$", metrics, re.M), metrics

    # Nothing of the build is left: not its RUN step, not buildah.
    assert not [alive(pid) for pid in building if alive(pid)]
    assert not processes_with_arg(marker)
    # Nor any process working in a job's directory (buildah bud): the
    # worker's own cache housekeeping after a job (buildah rm --all on the
    # image store) may run; it is not the job's.
    assert not job_dir_processes(stack_dir)
