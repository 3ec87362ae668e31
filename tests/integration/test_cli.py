# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issues 6 and 16: the `blacktree` command-line client.

`workers` runs against a real orchestrator and real worker processes.
`submit` runs against a real rabbitmq-server (tests/support/rabbitmq.sh); the
test reads what it published with pika, and for `--wait` plays the
orchestrator's part on the events exchange. `submit --wait`, `logs -f` and
`jobs` also run through a real orchestrator and worker on that broker."""

import json
import os
import pty
import re
import select
import signal
import subprocess
import types
import uuid
from pathlib import Path

import pika
import pytest

from conftest import BIN_DIR, Process, free_port, pb, wait_until

CLI = str(BIN_DIR / "blacktree")
RABBITMQ_SH = Path(__file__).resolve().parents[1] / "support" / "rabbitmq.sh"
FREE = pb.WORKER_STATE_FREE
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# Variables the CLI reads: the tests set them explicitly, never inherit them.
CLI_ENV = ("GITHUB_TOKEN", "MQ_URL", "MQ_PASSWORD_FILE", "MQ_TLS_CA_FILE", "ORCHESTRATOR_ADDR",
           "BLACKTREE_REGISTRATION_TOKEN", "BLACKTREE_REGISTRATION_TOKEN_FILE", "BLACKTREE_CONFIG",
           "BLACKTREE_EXECUTE_QUEUE", "BLACKTREE_EVENTS_EXCHANGE")


def cli_env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV}
    env.update(extra or {})
    return env


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([CLI, *args], env=cli_env(env), capture_output=True, text=True, timeout=timeout)


# --- workers -------------------------------------------------------------------

@pytest.fixture
def registered(cluster):
    """An orchestrator with a registration token and two workers in two regions
    (plaintext: these tests are about the token; test_security.py and
    test_workers_over_mutual_tls cover TLS)."""
    orch = cluster.orchestrator(token="reg-secret", tls=None)
    cluster.worker(orch, "w-eu", region="eu", labels=["pool=gpu"], capacity=2)
    cluster.worker(orch, "w-us", region="us")
    orch.wait_workers(lambda ws: set(ws) == {"w-eu", "w-us"} and all(w.state == FREE for w in ws.values()),
                      what="two free workers")
    return orch


def test_workers_table_lists_registered_workers(registered):
    r = run_cli("workers", "--orchestrator-addr", f"127.0.0.1:{registered.port}",
                env={"BLACKTREE_REGISTRATION_TOKEN": "reg-secret"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "REGION", "CAPACITY", "RUNNING", "LAST", "SEEN", "ADDRESS", "LABELS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"w-eu", "w-us"}
    eu = rows["w-eu"]
    # ID STATE REGION CAPACITY RUNNING <n>s ago ADDRESS LABELS
    assert eu[1:5] == ["free", "eu", "2", "0"]
    assert re.fullmatch(r"\d+s", eu[5]) and int(eu[5][:-1]) < 30 and eu[6] == "ago"
    assert eu[7].startswith("127.0.0.1:")
    assert eu[8] == "pool=gpu,region=eu"
    assert rows["w-us"][1:5] == ["free", "us", "1", "0"]
    assert "reg-secret" not in r.stdout + r.stderr


def test_workers_json_with_token_file(registered, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("reg-secret\n")
    # The address from the environment this time.
    r = run_cli("workers", "--json", "--registration-token-file", str(token_file),
                env={"ORCHESTRATOR_ADDR": f"127.0.0.1:{registered.port}"})
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    workers = {w["worker"]["id"]: w for w in reply["workers"]}
    assert set(workers) == {"w-eu", "w-us"}
    assert workers["w-eu"]["state"] == "WORKER_STATE_FREE"
    assert workers["w-eu"]["worker"]["labels"] == {"region": "eu", "pool": "gpu"}
    assert workers["w-eu"]["worker"]["capacity"] == 2
    assert "lastSeen" in workers["w-us"]


def test_workers_without_or_with_wrong_token_says_what_to_do(registered):
    addr = f"127.0.0.1:{registered.port}"
    r = run_cli("workers", "--orchestrator-addr", addr)
    assert r.returncode == 2
    assert f"the orchestrator at {addr} requires its registration token" in r.stderr
    assert "--registration-token-file" in r.stderr and "BLACKTREE_REGISTRATION_TOKEN" in r.stderr
    assert r.stdout == ""

    r = run_cli("workers", "--orchestrator-addr", addr, env={"BLACKTREE_REGISTRATION_TOKEN": "not-reg-secret"})
    assert r.returncode == 2
    assert f"the orchestrator at {addr} refused the registration token" in r.stderr
    assert "not-reg-secret" not in r.stderr  # the token itself is not echoed


def test_workers_over_mutual_tls(cluster, certs):
    orch = cluster.orchestrator()
    cluster.worker(orch, "w-tls")
    orch.wait_workers(lambda ws: ws.get("w-tls") and ws["w-tls"].state == FREE, what="'w-tls' registered")
    addr = f"127.0.0.1:{orch.port}"
    r = run_cli("workers", "--orchestrator-addr", addr, *orch.admin.flags())
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split()[0] == "w-tls"
    # Without a certificate the handshake fails: said, not a crash.
    r = run_cli("workers", "--orchestrator-addr", addr)
    assert r.returncode == 2 and f"cannot reach the orchestrator at {addr}" in r.stderr


def test_workers_unreachable_orchestrator(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    r = run_cli("workers", env={"ORCHESTRATOR_ADDR": addr}, timeout=30)
    assert r.returncode == 2
    assert f"cannot reach the orchestrator at {addr}: is it running?" in r.stderr
    assert "--orchestrator-addr" in r.stderr and "ORCHESTRATOR_ADDR" in r.stderr


def test_workers_reads_its_section_of_a_yaml_config(tmp_path):
    addr = f"127.0.0.1:{free_port()}"
    config = tmp_path / "blacktree.yaml"
    config.write_text(f"workers:\n  orchestrator-addr: {addr}\n  rpc-timeout-s: 5\n")
    for argv in (["--config", str(config), "workers"], ["workers", "--config", str(config)]):
        r = run_cli(*argv, timeout=30)
        assert r.returncode == 2 and f"cannot reach the orchestrator at {addr}" in r.stderr, r.stderr
    config.write_text("workers:\n  no-such-setting: 1\n")
    r = run_cli("--config", str(config), "workers")
    assert r.returncode == 64 and "no-such-setting" in r.stderr


def test_help_and_version():
    for args, expected in [((), ["submit", "cancel", "logs", "workers", "jobs", "Exit codes"]),
                           (("submit",), ["--repo", "--image", "--token-env", "--token-file", "--wait",
                                          "--wait-timeout-s", "--mq-url", "MQ_URL", "--events-exchange",
                                          "--priority"]),
                           (("logs",), ["JOBID", "-f,--follow", "from now on", "--mq-url", "--events-exchange",
                                        "--wait-timeout-s"]),
                           (("workers",), ["--orchestrator-addr", "ORCHESTRATOR_ADDR", "--json",
                                           "--registration-token-file"]),
                           (("jobs",), ["--orchestrator-addr", "ORCHESTRATOR_ADDR", "--finished", "--json",
                                        "--registration-token-file", "--tls-cert"])]:
        r = run_cli(*args, "--help")
        assert r.returncode == 0, r.stderr
        for text in expected:
            assert text in r.stdout, (args, text)
    r = run_cli("--version")
    assert r.returncode == 0 and re.search(r"\d+\.\d+\.\d+", r.stdout)
    # No subcommand, an unknown flag, a missing required flag: usage errors.
    assert run_cli().returncode == 64
    assert run_cli("workers", "--no-such-flag").returncode == 64
    assert run_cli("submit", "--repo", "a/b").returncode == 64  # --image missing
    # logs without -f: nothing to show (the events exchange keeps no history), said before any broker is reached.
    r = run_cli("logs", "some-job", "--mq-url", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert r.returncode == 64 and "logs needs -f (--follow)" in r.stderr, r.stderr
    r = run_cli("logs", "-f", "bad/id", "--mq-url", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    assert r.returncode == 64 and "JOBID: jobId" in r.stderr, r.stderr


# --- submit ----------------------------------------------------------------------

class Broker:
    def __init__(self, directory: Path):
        self.dir = directory
        self.port = int((directory / "port").read_text().strip())
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def connect(self):
        return pika.BlockingConnection(pika.URLParameters(self.url + "%2F?connection_attempts=3&retry_delay=0.5"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rabbitmq")
    subprocess.run([str(RABBITMQ_SH), "start", str(directory)], check=True, timeout=150)
    try:
        yield Broker(directory)
    finally:
        subprocess.run([str(RABBITMQ_SH), "stop", str(directory)], timeout=90)


@pytest.fixture
def mq(broker):
    """A pika channel, and execute.queue declared (durable) and empty, as the orchestrator leaves it."""
    connection = broker.connect()
    channel = connection.channel()
    channel.queue_declare("execute.queue", durable=True)
    channel.queue_purge("execute.queue")
    channel.exchange_declare("blacktree.events", exchange_type="topic", durable=True)
    yield channel
    connection.close()


def take_job(channel, queue="execute.queue", timeout=20.0):
    """The next message on `queue` (body as JSON, properties), waiting for it to arrive."""
    def get():
        method, props, body = channel.basic_get(queue, auto_ack=True)
        return (json.loads(body), props) if method else None
    return wait_until(get, timeout, f"a message on {queue}")


SEED_FIELDS = {"jobId", "repoUrl", "branch", "dockerfilePath", "contextDir", "imageName", "githubToken"}


def test_submit_publishes_the_seed_job_request(broker, mq):
    token = "ghp_" + uuid.uuid4().hex
    argv = ["submit", "--repo", "octo/app", "--branch", "release-1", "--dockerfile", "docker/Dockerfile",
            "--context", "src", "--image", "registry.local/team/app:1.2", "--region", "eu",
            "--label", "arch=arm64", "--label", "tier=gpu", "--job-id", "job-flags-1", "--timeout-s", "600",
            "--priority", "7"]
    r = run_cli(*argv, env={"MQ_URL": broker.url, "GITHUB_TOKEN": token})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "job-flags-1\n"

    job, props = take_job(mq)
    assert SEED_FIELDS <= job.keys()
    assert {k: job[k] for k in SEED_FIELDS} == {
        "jobId": "job-flags-1", "repoUrl": "octo/app", "branch": "release-1", "dockerfilePath": "docker/Dockerfile",
        "contextDir": "src", "imageName": "registry.local/team/app:1.2", "githubToken": token}
    assert job["labels"] == {"region": "eu", "arch": "arm64", "tier": "gpu"}
    assert job["timeoutSeconds"] == 600
    assert job["priority"] == 7 and props.priority == 7  # the AMQP priority too, for x-max-priority queues
    assert props.delivery_mode == 2 and props.content_type == "application/json"
    # The token came from the environment: not in argv, not in anything the CLI printed.
    assert all(token not in a for a in argv)
    assert token not in r.stdout + r.stderr


def test_submit_defaults_and_token_file(broker, mq, tmp_path):
    r = run_cli("submit", "--repo", "https://git.example.com/app.git", "--image", "app:latest",
                env={"MQ_URL": broker.url})
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert UUID4.match(job_id), job_id
    job, props = take_job(mq)
    assert {k: job[k] for k in SEED_FIELDS} == {
        "jobId": job_id, "repoUrl": "https://git.example.com/app.git", "branch": "main",
        "dockerfilePath": "Dockerfile", "contextDir": ".", "imageName": "app:latest", "githubToken": ""}
    assert job.get("labels", {}) == {}
    assert job.get("priority", 0) == 0 and props.priority == 0

    # Another variable named with --token-env, and a file with --token-file.
    r = run_cli("submit", "--repo", "o/a", "--image", "a:1", "--job-id", "env-token", "--token-env", "MY_TOKEN",
                env={"MQ_URL": broker.url, "MY_TOKEN": "from-my-token", "GITHUB_TOKEN": "not-this-one"})
    assert r.returncode == 0, r.stderr
    assert take_job(mq)[0]["githubToken"] == "from-my-token"
    token_file = tmp_path / "gh-token"
    token_file.write_text("from-the-file\n")
    r = run_cli("submit", "--repo", "o/a", "--image", "a:1", "--job-id", "file-token", "--token-file",
                str(token_file), env={"MQ_URL": broker.url, "GITHUB_TOKEN": "not-this-one"})
    assert r.returncode == 0, r.stderr
    assert take_job(mq)[0]["githubToken"] == "from-the-file"

    # A token is never a flag value.
    r = run_cli("submit", "--repo", "o/a", "--image", "a:1", "--token", "abc", env={"MQ_URL": broker.url})
    assert r.returncode == 64


def test_submit_to_an_unreachable_broker_names_it_without_the_password():
    port = free_port()
    r = run_cli("submit", "--repo", "o/a", "--image", "a:1", "--mq-url",
                f"amqp://admin:pw-{port}-secret@127.0.0.1:{port}/", timeout=30)
    assert r.returncode == 2
    assert f"127.0.0.1:{port}" in r.stderr and "connection refused" in r.stderr
    assert "secret" not in r.stderr and "admin:" not in r.stderr
    assert r.stdout == ""


def test_submit_with_a_wrong_password_or_amqps_to_nowhere(broker):
    r = run_cli("submit", "--repo", "o/a", "--image", "a:1",
                "--mq-url", f"amqp://guest:not-the-password@127.0.0.1:{broker.port}/", timeout=30)
    assert r.returncode == 2
    assert f"cannot log in to the broker at amqp://127.0.0.1:{broker.port}/ as 'guest'" in r.stderr
    assert "not-the-password" not in r.stderr

    port = free_port()
    r = run_cli("submit", "--repo", "o/a", "--image", "a:1", "--mq-url", f"amqps://u:tls-secret@127.0.0.1:{port}/",
                timeout=30)
    assert r.returncode == 2
    assert f"amqps://127.0.0.1:{port}/" in r.stderr and "tls-secret" not in r.stderr


def test_submit_to_a_missing_queue_fails_instead_of_losing_the_job(broker, mq):
    queue = f"no-such-queue-{uuid.uuid4().hex[:8]}"
    r = run_cli("submit", "--repo", "o/a", "--image", "a:1", "--execute-queue", queue, env={"MQ_URL": broker.url})
    assert r.returncode == 2
    assert f"queue '{queue}' does not exist" in r.stderr
    assert r.stdout == ""


def publish_event(channel, job_id, **fields):
    event = {"jobId": job_id, "workerId": "w-eu", **fields}
    channel.basic_publish("blacktree.events", f"job.{job_id}", json.dumps(event),
                          pika.BasicProperties(content_type="application/json", delivery_mode=1))


def start_wait(broker, job_id, *extra, stderr=subprocess.PIPE, env=None):
    argv = [CLI, "submit", "--repo", "octo/app", "--image", "registry.local/app:1", "--job-id", job_id,
            "--wait", "--wait-timeout-s", "60", *extra]
    return subprocess.Popen(argv, env=cli_env({"MQ_URL": broker.url, **(env or {})}), stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


def test_submit_wait_success_prints_digest(broker, mq):
    job_id = f"wait-ok-{uuid.uuid4().hex[:8]}"
    token = "ghp_" + uuid.uuid4().hex
    proc = start_wait(broker, job_id, env={"GITHUB_TOKEN": token})
    try:
        # The CLI binds its events queue before it publishes: once the job is
        # queued, every event published from now on reaches it.
        job, _ = take_job(mq)
        assert job["jobId"] == job_id and job["githubToken"] == token
        assert token not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode(errors="replace")
        digest = "sha256:" + "ab" * 32
        publish_event(mq, f"{job_id}-other", phase="PHASE_BUILDING", line="another job's line")
        publish_event(mq, job_id, phase="PHASE_ACCEPTED")
        publish_event(mq, job_id, phase="PHASE_CLONING", line="Cloning into 'src'...")
        publish_event(mq, job_id, phase="PHASE_BUILDING", line="Step 1/2 : FROM scratch")
        publish_event(mq, job_id, phase="PHASE_PUSHING", line="pushed registry.local/app:1")
        publish_event(mq, job_id, phase="PHASE_FINISHED", time="2026-01-01T00:00:00Z",
                      result={"jobId": job_id, "success": True, "logs": "...", "error": "",
                              "imageUrl": f"registry.local/app@{digest}", "imageDigest": digest,
                              "workerId": "w-eu"})
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines()[0] == job_id
    assert f"job {job_id} succeeded on worker w-eu" in out
    assert f"digest: {digest}" in out and f"registry.local/app@{digest}" in out
    assert "[cloning] Cloning into 'src'..." in err
    assert "[building] Step 1/2 : FROM scratch" in err
    assert "another job's line" not in err + out
    assert token not in out + err


def test_submit_wait_failure_exits_1_with_the_jobs_error(broker, mq):
    job_id = f"wait-bad-{uuid.uuid4().hex[:8]}"
    proc = start_wait(broker, job_id)
    try:
        take_job(mq)
        publish_event(mq, job_id, phase="PHASE_CLONING")
        # No output lines were streamed: the summary shows the result's log tail.
        publish_event(mq, job_id, phase="PHASE_FINISHED",
                      result={"jobId": job_id, "success": False, "imageUrl": "", "workerId": "w-eu",
                              "logs": "fatal: repository 'octo/app' not found\n",
                              "error": "git clone failed: repository not found"})
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert f"job {job_id} failed on worker w-eu: git clone failed: repository not found" in out
    assert "fatal: repository 'octo/app' not found" in out
    assert "[cloning]" in err


def test_submit_wait_timeout_exits_3(broker, mq):
    job_id = f"wait-late-{uuid.uuid4().hex[:8]}"
    r = run_cli("submit", "--repo", "o/a", "--image", "a:1", "--job-id", job_id, "--wait", "--wait-timeout-s", "1",
                env={"MQ_URL": broker.url})
    assert r.returncode == 3
    assert r.stdout == f"{job_id}\n"
    assert "may still be running" in r.stderr
    assert take_job(mq)[0]["jobId"] == job_id  # published all the same


def test_submit_wait_interrupted_says_the_job_keeps_running(broker, mq):
    job_id = f"wait-int-{uuid.uuid4().hex[:8]}"
    proc = start_wait(broker, job_id)
    try:
        take_job(mq)  # queued: the CLI is following it now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT
    assert out == f"{job_id}\n"
    assert f"stopped following job {job_id}; the job itself keeps running" in err


def test_submit_wait_on_a_terminal_shows_a_live_phase_line(broker, mq):
    job_id = f"wait-tty-{uuid.uuid4().hex[:8]}"
    master, slave = pty.openpty()
    proc = start_wait(broker, job_id, stderr=slave)
    os.close(slave)
    seen = bytearray()

    def read_until(text, timeout=20.0):
        def check():
            while select.select([master], [], [], 0.05)[0]:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the CLI has closed the terminal
                    break
                if not chunk:
                    break
                seen.extend(chunk)
            return text in seen
        wait_until(check, timeout, f"{text!r} on the terminal")

    try:
        take_job(mq)
        publish_event(mq, job_id, phase="PHASE_BUILDING", line="Step 1/2 : FROM scratch")
        read_until(b"building")
        read_until(b"Step 1/2 : FROM scratch\r\n")  # the terminal turns "\n" into "\r\n"
        publish_event(mq, job_id, phase="PHASE_FINISHED",
                      result={"jobId": job_id, "success": True, "imageDigest": "sha256:" + "cd" * 32})
        out, _ = proc.communicate(timeout=30)
        read_until(b"\r\x1b[K")
    finally:
        proc.kill()
        os.close(master)
    assert proc.returncode == 0
    assert "digest: sha256:" + "cd" * 32 in out
    # The live line is redrawn in place ("\r", erase line), with the job and its phase.
    assert b"\r\x1b[K" in seen and job_id.encode() in seen
    assert b"[building]" not in seen  # the plain format is for pipes


def queue_exists(broker, name):
    connection = broker.connect()
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        connection.close()


@pytest.fixture
def real_orchestrator(broker, tmp_path):
    """A real orchestrator on the broker with queues of its own (plaintext
    gRPC: these tests are about the CLI's AMQP path, not gRPC's security).
    .port is its gRPC port, .target what cluster.worker() takes to register a worker with it."""
    suffix = uuid.uuid4().hex[:8]
    port = free_port()
    execute_queue, status_queue = f"execute.e2e-{suffix}", f"status.e2e-{suffix}"
    orch = Process("orchestrator-amqp",
                   [str(BIN_DIR / "blacktree-orchestrator"), "--listen", f"127.0.0.1:{port}", "--queue", "amqp",
                    "--mq-url", broker.url, "--execute-queue", execute_queue, "--status-queue", status_queue,
                    "--http-listen", "", "--ping-interval-ms", "300", "--ping-timeout-ms", "250", "--insecure"],
                   tmp_path / "orchestrator-amqp.log")
    try:
        orch.wait_log("serving gRPC on port")
        wait_until(lambda: queue_exists(broker, execute_queue), 20, f"the orchestrator to declare {execute_queue}")
        yield types.SimpleNamespace(process=orch, port=port, addr=f"127.0.0.1:{port}", suffix=suffix,
                                    execute_queue=execute_queue, status_queue=status_queue,
                                    target=types.SimpleNamespace(port=port, token=None))
    finally:
        orch.close()


def wait_free_workers(orchestrator, n):
    addr = {"ORCHESTRATOR_ADDR": orchestrator.addr}
    wait_until(lambda: run_cli("workers", env=addr).stdout.count(" free ") == n, 20, f"{n} free workers")


def test_submit_wait_through_a_real_orchestrator_and_worker(broker, real_orchestrator, cluster, monkeypatch):
    """The whole path: CLI -> RabbitMQ -> orchestrator -> worker (argv runner)
    -> events exchange -> CLI; and status.queue is left to the control plane."""
    orch, suffix = real_orchestrator, real_orchestrator.suffix
    monkeypatch.setenv("WORKER_RUNNER", "argv")  # a fixed command instead of a real build
    cluster.worker(orch.target, "e2e-eu", region="eu",
                   command=["sh", "-c", "echo building $BLACKTREE_JOB_ID; echo done"])
    cluster.worker(orch.target, "e2e-us", region="us", command=["sh", "-c", "echo cannot build; exit 7"])
    wait_free_workers(orch, 2)

    common = ["submit", "--repo", "octo/app", "--image", "registry.local/app:1", "--execute-queue", orch.execute_queue,
              "--wait", "--wait-timeout-s", "60"]
    good = run_cli(*common, "--region", "eu", "--job-id", f"e2e-good-{suffix}", env={"MQ_URL": broker.url})
    assert good.returncode == 0, good.stderr + orch.process.log()
    assert f"job e2e-good-{suffix} succeeded on worker e2e-eu" in good.stdout
    assert f"building e2e-good-{suffix}" in good.stderr

    bad = run_cli(*common, "--region", "us", "--job-id", f"e2e-bad-{suffix}", env={"MQ_URL": broker.url})
    assert bad.returncode == 1, bad.stderr + orch.process.log()
    assert f"job e2e-bad-{suffix} failed on worker e2e-us:" in bad.stdout
    assert "exited with code 7" in bad.stdout
    assert "cannot build" in bad.stderr

    # Both statuses are still on status.queue for the control plane: the CLI took neither.
    connection = broker.connect()
    try:
        channel = connection.channel()
        wait_until(lambda: channel.queue_declare(orch.status_queue, passive=True).method.message_count == 2, 20,
                   "two statuses on the status queue")
    finally:
        connection.close()


# --- logs -f and jobs, through a real orchestrator and worker -----------------------

# A job of the gated worker: it marks itself started, prints a line, waits for
# the test to open its gate (a FIFO named after it), prints three lines and
# ends: failed (exit 3) when its id starts with "fail".
GATED_JOB = """id=$BLACKTREE_JOB_ID
echo "$id" >> "$0/started"
echo "$id is waiting for its gate"
read go < "$0/$id.gate"
for n in 1 2 3; do echo "$id line $n"; done
case $id in fail*) echo "$id fails on purpose"; exit 3;; esac
"""


@pytest.fixture
def gated(broker, real_orchestrator, cluster, tmp_path):
    """The real orchestrator and one worker, "w-gate" (region eu, tier=fast,
    capacity 2), running GATED_JOB: each job holds until open_gate(its id)."""
    orch = real_orchestrator
    cluster.worker(orch.target, "w-gate", region="eu", labels=["tier=fast"], capacity=2,
                   command=["sh", "-c", GATED_JOB, str(tmp_path)])
    wait_free_workers(orch, 1)

    def submit(job_id, *extra):
        """Queues job_id (its gate made first) and waits until it runs, held at its gate."""
        os.mkfifo(tmp_path / f"{job_id}.gate")
        r = run_cli("submit", "--repo", "octo/app", "--image", "registry.local/app:1", "--execute-queue",
                    orch.execute_queue, "--job-id", job_id, *extra, env={"MQ_URL": broker.url})
        assert r.returncode == 0, r.stderr
        started = tmp_path / "started"
        wait_until(lambda: started.exists() and job_id in started.read_text().split(), 30, f"job {job_id} running")

    def open_gate(job_id):
        gate = tmp_path / f"{job_id}.gate"

        def opened():
            try:  # without blocking: ENXIO until the job opens its end
                fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                return False
            os.write(fd, b"go\n")
            os.close(fd)
            return True
        wait_until(opened, 30, f"job {job_id} reading its gate")

    def jobs(*args):
        return run_cli("jobs", "--orchestrator-addr", orch.addr, *args)

    return types.SimpleNamespace(orchestrator=orch, submit=submit, open_gate=open_gate, jobs=jobs,
                                 suffix=orch.suffix)


def start_logs(broker, tmp_path, job_id, *extra):
    """`blacktree logs -f job_id`, its stderr in a file; returns once it has subscribed."""
    err_path = tmp_path / f"logs-{job_id}.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([CLI, "logs", "-f", job_id, *extra], env=cli_env({"MQ_URL": broker.url}),
                                stdout=subprocess.PIPE, stderr=err, text=True)
    wait_until(lambda: f"following job {job_id}" in err_path.read_text() or proc.poll() is not None, 30,
               "logs -f subscribed")
    assert proc.poll() is None, err_path.read_text()
    return proc, err_path


def finish_logs(proc, err_path):
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, err_path.read_text()


@pytest.mark.timeout(180)
def test_logs_follow_prints_the_jobs_output_until_it_ends(broker, gated, tmp_path):
    job_id = f"logs-ok-{gated.suffix}"
    gated.submit(job_id)
    proc, err_path = start_logs(broker, tmp_path, job_id)
    gated.open_gate(job_id)
    code, out, err = finish_logs(proc, err_path)
    assert code == 0, err
    # The job's own lines on stdout, raw (a pipe); the line it printed before
    # `logs` subscribed may or may not have been published after.
    lines = [line for line in out.splitlines() if line != f"{job_id} is waiting for its gate"]
    assert lines == [f"{job_id} line 1", f"{job_id} line 2", f"{job_id} line 3"], out
    assert f"job {job_id} succeeded on worker w-gate" in err


@pytest.mark.timeout(180)
def test_logs_follow_of_a_failing_job_exits_1(broker, gated, tmp_path):
    job_id = f"fail-logs-{gated.suffix}"
    gated.submit(job_id)
    proc, err_path = start_logs(broker, tmp_path, job_id)
    gated.open_gate(job_id)
    code, out, err = finish_logs(proc, err_path)
    assert code == 1, err
    assert f"{job_id} line 3\n{job_id} fails on purpose\n" in out
    assert f"job {job_id} failed on worker w-gate:" in err and "exited with code 3" in err


@pytest.mark.timeout(60)
def test_logs_follow_interrupted_or_timed_out(broker, mq, tmp_path):
    """Nothing publishes for this job: Ctrl-C stops following (128+2), and --wait-timeout-s gives up (3)."""
    proc, err_path = start_logs(broker, tmp_path, "nobody-runs-this")
    proc.send_signal(signal.SIGINT)
    code, out, err = finish_logs(proc, err_path)
    assert code == 128 + signal.SIGINT and out == ""
    assert "stopped following job nobody-runs-this; the job itself keeps running" in err

    r = run_cli("logs", "-f", "nobody-runs-this", "--wait-timeout-s", "1", env={"MQ_URL": broker.url})
    assert r.returncode == 3 and "no result for job nobody-runs-this within 1 s" in r.stderr, r.stderr
    r = run_cli("logs", "-f", "any", "--mq-url", f"amqp://guest:guest@127.0.0.1:{free_port()}/", timeout=30)
    assert r.returncode == 2 and "connection refused" in r.stderr, r.stderr


def jobs_table(result):
    """`blacktree jobs` output: {job id: its row's columns}, after checking the header."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["JOB", "ID", "STATE", "WORKER", "PHASE", "AGE", "DURATION", "PRIORITY", "OUTCOME",
                                "LABELS"]
    return {line.split()[0]: line.split() for line in lines[1:]}


@pytest.mark.timeout(180)
def test_jobs_lists_a_running_job_and_with_finished_its_outcome(gated):
    running, failing = f"jobs-run-{gated.suffix}", f"fail-jobs-{gated.suffix}"
    gated.submit(running, "--region", "eu", "--label", "tier=fast", "--priority", "7")
    gated.submit(failing)

    rows = jobs_table(gated.jobs())
    # JOB-ID STATE WORKER PHASE AGE DURATION PRIORITY OUTCOME LABELS
    row = rows[running]
    assert row[1:3] == ["running", "w-gate"], row
    assert re.fullmatch(r"\d+s", row[4]) and re.fullmatch(r"\d+s", row[5]), row
    assert row[6:] == ["7", "-", "region=eu,tier=fast"], row
    assert rows[failing][1:3] == ["running", "w-gate"] and rows[failing][6:] == ["0", "-", "-"]

    reply = json.loads(gated.jobs("--json").stdout)
    by_id = {j["jobId"]: j for j in reply["jobs"]}
    assert by_id[running]["state"] == "JOB_STATE_RUNNING" and by_id[running]["workerId"] == "w-gate"
    assert by_id[running]["priority"] == 7 and by_id[running]["labels"] == {"region": "eu", "tier": "fast"}

    gated.open_gate(running)
    gated.open_gate(failing)

    def finished():
        rows = jobs_table(gated.jobs("--finished"))
        done = [rows.get(j) for j in (running, failing)]
        return done if all(r and r[1] == "finished" for r in done) else None
    ran, failed = wait_until(finished, 30, "both jobs finished")
    assert ran[2] == "w-gate" and ran[7] == "succeeded", ran
    assert failed[2] == "w-gate" and failed[7] == "failed", failed
    # No longer in flight: not listed without --finished.
    in_flight = gated.jobs()
    assert running not in in_flight.stdout and failing not in in_flight.stdout
    assert "holds no jobs" in in_flight.stderr


def test_environment_overrides_the_cli_config_file(tmp_path):
    """flags > environment > YAML, as in the services: ORCHESTRATOR_ADDR beats the file."""
    import os as _os
    import subprocess as _sp
    from conftest import BIN_DIR as _BIN, free_port as _free
    config = tmp_path / "cli.yaml"
    file_port, env_port = _free(), _free()
    config.write_text(f"workers:\n  orchestrator-addr: 127.0.0.1:{file_port}\n")
    env = dict(_os.environ, ORCHESTRATOR_ADDR=f"127.0.0.1:{env_port}")
    out = _sp.run([str(_BIN / "blacktree"), "--config", str(config), "workers"], env=env, capture_output=True,
                  text=True, timeout=30)
    assert out.returncode == 2
    assert f"127.0.0.1:{env_port}" in out.stderr and f"127.0.0.1:{file_port}" not in out.stderr
