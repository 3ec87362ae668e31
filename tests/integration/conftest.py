# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Shared fixtures for the integration tests: real blacktree processes on free
loopback ports, a gRPC admin client, and waits that poll a condition with a
deadline (never a fixed sleep standing in for a condition)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.environ.get("BLACKTREE_PY_DIR", ""))
sys.path.insert(0, str(Path(__file__).parent))

import grpc  # noqa: E402
from blacktree.v1 import blacktree_pb2 as pb  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402

BIN_DIR = Path(os.environ.get("BLACKTREE_BIN_DIR", "build/services"))


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout=20.0, what="condition", interval=0.05):
    """Polls `condition` until it returns a truthy value or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Process:
    """A child process whose stderr goes to a log file we can search."""

    def __init__(self, name, argv, log_path, stdin=None, stdout=None, env=None):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log_file = open(log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=self.log_file, env=full_env)

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def wait_log(self, text, timeout=20.0):
        return wait_until(lambda: text in self.log(), timeout, f"'{text}' in {self.name}'s log")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout=60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def http_get(self, path):
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        """/metrics (at self.http_port) parsed as the Prometheus text format: {'name{labels}': value}."""
        import re
        status, text = self.http_get("/metrics")
        assert status == 200
        sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (\S+)$')
        values = {}
        for line in text.splitlines():
            if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
                continue
            m = sample.match(line)
            assert m, f"not Prometheus text format: {line!r}"
            values[m.group(1) + (m.group(2) or "")] = float(m.group(4))
        return values

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log_file.close()


class Orchestrator(Process):
    """blacktree-orchestrator with the stdio queue: jobs are written to its
    stdin as JobRequest JSON lines; statuses are read from its stdout."""

    def __init__(self, tmp_path, port=None, token=None, extra=(), name="orchestrator",
                 ping_interval_ms=300, ping_timeout_ms=250, amqp=None, tls=None, admin=None, insecure=None,
                 ping_misses=2):
        """amqp: None for the stdio queue, else a dict of AMQP flags
        (mq-url, execute-queue, status-queue, ...) without the leading --.
        tls: the Identity it serves mutual TLS with (None: plaintext); admin:
        the Identity its admin calls use. insecure (default: neither TLS nor
        a token) adds --insecure."""
        self.port = port or free_port()
        self.http_port = free_port()
        argv = [str(BIN_DIR / "blacktree-orchestrator"), "--listen", f"127.0.0.1:{self.port}",
                "--http-listen", f"127.0.0.1:{self.http_port}",
                "--ping-interval-ms", str(ping_interval_ms),
                "--ping-timeout-ms", str(ping_timeout_ms), "--ping-misses", str(ping_misses), *extra]
        if amqp is None:
            argv += ["--queue", "stdio"]
        else:
            argv += ["--queue", "amqp"]
            for key, value in amqp.items():
                argv += [f"--{key}", str(value)]
        self.tls = tls
        self.admin = admin
        argv += tls.flags() if tls else []
        if insecure if insecure is not None else not (tls or token):
            argv.append("--insecure")
        self.token = token
        if token:
            token_file = tmp_path / f"{name}-token"
            token_file.write_text(token + "\n")
            argv += ["--registration-token-file", str(token_file)]
        super().__init__(name, argv, tmp_path / f"{name}.log", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.statuses = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self.amqp = amqp
        self._reader.start()
        self.wait_log("serving gRPC on port")
        # /healthz and /metrics open after the queue is wired: wait for them
        # too, or a first http_get can race the listener.
        self.wait_log("serving /healthz and /metrics on port")

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.statuses.append(json.loads(line))

    def submit(self, job: dict):
        self.submit_raw(json.dumps(job))

    def submit_raw(self, line: str):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def results(self):
        with self._lock:
            return list(self.statuses)

    def status_of(self, job_id, timeout=30.0):
        return wait_until(lambda: next((s for s in self.results() if s["jobId"] == job_id), None), timeout,
                          f"a status for job {job_id}")

    def wait_statuses(self, n, timeout=60.0):
        return wait_until(lambda: len(self.results()) >= n and self.results(), timeout, f"{n} statuses")

    # --- admin gRPC ---------------------------------------------------------
    def channel(self, identity=None):
        if self.tls:
            identity = identity or self.admin or self.tls
            return grpc.secure_channel(f"127.0.0.1:{self.port}", identity.channel_credentials())
        return grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def list_workers(self, token=None):
        token = token if token is not None else self.token
        with self.channel() as ch:
            call = ch.unary_unary("/blacktree.v1.Orchestrator/ListWorkers",
                                  request_serializer=pb.ListWorkersRequest.SerializeToString,
                                  response_deserializer=pb.ListWorkersReply.FromString)
            metadata = [("authorization", f"Bearer {token}")] if token else None
            return {w.worker.id: w for w in call(pb.ListWorkersRequest(), timeout=5, metadata=metadata).workers}

    def register(self, worker: pb.WorkerInfo, token=None, identity=None):
        """identity: the certificate to call with (default: the admin's)."""
        token = token if token is not None else self.token
        with self.channel(identity) as ch:
            call = ch.unary_unary("/blacktree.v1.Orchestrator/Register",
                                  request_serializer=pb.RegisterRequest.SerializeToString,
                                  response_deserializer=pb.RegisterReply.FromString)
            metadata = [("authorization", f"Bearer {token}")] if token else None
            return call(pb.RegisterRequest(worker=worker), timeout=5, metadata=metadata)

    def wait_workers(self, predicate, timeout=20.0, what="workers"):
        def check():
            try:
                workers = self.list_workers()
            except grpc.RpcError:
                return None
            return [workers] if predicate(workers) else None  # [{}] is truthy, {} is not
        return wait_until(check, timeout, what)[0]


class Worker(Process):
    def __init__(self, tmp_path, orchestrator_port, worker_id, command, region=None, capacity=None,
                 token=None, port=None, labels=(), extra=(), env=None, tls=None, insecure=None, name=None,
                 http=False, more_orchestrators=()):
        """name: the process's (and its log's) name when two processes share a worker id.
        http: serve /healthz and /metrics (on self.http_port).
        more_orchestrators: ports of orchestrators to fail over to, in order."""
        self.port = port or free_port()
        self.worker_id = worker_id
        addresses = ",".join(f"127.0.0.1:{p}" for p in (orchestrator_port, *more_orchestrators))
        argv = [str(BIN_DIR / "blacktree-worker"), "--orchestrator-addr", addresses,
                "--listen", f"127.0.0.1:{self.port}", "--worker-id", worker_id,
                "--drain-timeout-s", "20", *extra]
        self.http_port = free_port() if http else None
        if http:
            argv += ["--http-listen", f"127.0.0.1:{self.http_port}"]
        self.tls = tls
        argv += tls.flags() if tls else []
        if insecure if insecure is not None else not (tls or token):
            argv.append("--insecure")
        if "--runner" not in extra:
            argv += ["--runner", "argv"]
        if capacity is not None:
            argv += ["--capacity", str(capacity)]
        if region:
            argv += ["--region", region]
        for label in labels:
            argv += ["--label", label]
        env = dict(env or {})
        if token:
            env["BLACKTREE_REGISTRATION_TOKEN"] = token
        argv += ["--", *command]
        name = name or worker_id
        super().__init__(name, argv, tmp_path / f"{name}.log", env=env)
        self.wait_log("serving on port")


def health_status(port, identity=None) -> int:
    """identity: the Identity to call with over mutual TLS (None: plaintext)."""
    target = f"127.0.0.1:{port}"
    with (grpc.secure_channel(target, identity.channel_credentials()) if identity
          else grpc.insecure_channel(target)) as ch:
        call = ch.unary_unary("/grpc.health.v1.Health/Check",
                              request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                              response_deserializer=health_pb2.HealthCheckResponse.FromString)
        return call(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def job(job_id, **extra):
    base = {"jobId": job_id, "repoUrl": "example/app", "branch": "main", "dockerfilePath": "Dockerfile",
            "contextDir": ".", "imageName": "app:latest", "githubToken": "not-a-real-token"}
    base.update(extra)
    return base


@pytest.fixture
def cluster(tmp_path, certs):
    """Starts processes on demand and stops every one at the end of the test.
    Every process runs mutual TLS with a certificate from the session's test
    CA (`certs`) naming it, unless the test says tls=None; a worker follows
    its orchestrator (plaintext beside a plaintext one)."""
    started = []

    class Cluster:
        def orchestrator(self, **kw):
            kw.setdefault("tls", certs.identity(ORCHESTRATOR_NAME))
            kw.setdefault("admin", certs.identity(ADMIN_NAME))
            o = Orchestrator(tmp_path, **kw)
            started.append(o)
            return o

        def worker(self, orchestrator, worker_id, command=("true",), **kw):
            kw.setdefault("token", orchestrator.token)
            if "tls" not in kw:
                kw["tls"] = certs.identity(worker_id) if getattr(orchestrator, "tls", None) else None
            w = Worker(tmp_path, orchestrator.port, worker_id, list(command), **kw)
            started.append(w)
            return w

    yield Cluster()
    for p in reversed(started):
        p.close()


# --- mutual TLS --------------------------------------------------------------
# One throwaway CA per session (scripts/make-certs.sh), a certificate per name
# made when first asked for: the orchestrator's, an admin's, one per worker id.

SOURCE_DIR = Path(os.environ.get("BLACKTREE_SOURCE_DIR", Path(__file__).resolve().parents[2]))
ORCHESTRATOR_NAME = "blacktree-orchestrator"  # the workers' default --orchestrator-name
ADMIN_NAME = "blacktree-admin"


class Identity:
    """A certificate, its key and the CA that signed it, as files."""

    def __init__(self, directory: Path, name: str):
        self.name = name
        self.cert = directory / f"{name}.pem"
        self.key = directory / f"{name}.key"
        self.ca = directory / "ca.pem"

    def flags(self, reload_interval_s=None):
        out = ["--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-ca", str(self.ca)]
        if reload_interval_s:
            out += ["--tls-reload-interval-s", str(reload_interval_s)]
        return out

    def channel_credentials(self):
        return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes(),
                                            private_key=self.key.read_bytes(),
                                            certificate_chain=self.cert.read_bytes())


class CertificateAuthority:
    def __init__(self, directory: Path):
        self.dir = directory
        self._lock = threading.Lock()

    def make(self, *names):
        """New key and certificate for each name (replacing any it had)."""
        subprocess.run(["bash", str(SOURCE_DIR / "scripts" / "make-certs.sh"), str(self.dir), *names],
                       check=True, capture_output=True, timeout=60)

    def identity(self, name) -> Identity:
        with self._lock:
            if not (self.dir / f"{name}.pem").exists():
                self.make(name)
        return Identity(self.dir, name)


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """The session's test CA: certs.identity(name) is a certificate naming `name`."""
    return CertificateAuthority(tmp_path_factory.mktemp("certs"))
