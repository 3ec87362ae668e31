# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 11, the gRPC trust boundary, tried as an attacker would: real
orchestrator and worker processes, real TLS on loopback, certificates from
the session's throwaway CA (scripts/make-certs.sh)."""

import shutil
import socket
import ssl
import subprocess

import grpc
import pytest

from conftest import ADMIN_NAME, BIN_DIR, ORCHESTRATOR_NAME, CertificateAuthority, job, pb, wait_until

FREE = pb.WORKER_STATE_FREE


def call(target, credentials, method, request, reply_type, metadata=None, stream=False):
    """One call to `target` (host:port) over `credentials` (None: plaintext)."""
    with (grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)) as ch:
        if stream:
            rpc = ch.unary_stream(method, request_serializer=type(request).SerializeToString,
                                  response_deserializer=reply_type.FromString)
            return list(rpc(request, timeout=5, metadata=metadata))
        rpc = ch.unary_unary(method, request_serializer=type(request).SerializeToString,
                             response_deserializer=reply_type.FromString)
        return rpc(request, timeout=5, metadata=metadata)


def refused(fn, *codes):
    with pytest.raises(grpc.RpcError) as e:
        fn()
    assert e.value.code() in codes, (e.value.code(), e.value.details())
    return e.value


def list_workers(port, credentials, metadata=None):
    return call(f"127.0.0.1:{port}", credentials, "/blacktree.v1.Orchestrator/ListWorkers",
                pb.ListWorkersRequest(), pb.ListWorkersReply, metadata)


def ping(port, credentials, metadata=None):
    return call(f"127.0.0.1:{port}", credentials, "/blacktree.v1.Worker/Ping", pb.PingRequest(), pb.PingReply,
                metadata)


def run_job(port, credentials, metadata=None):
    request = pb.RunJobRequest(job=pb.JobRequest(job_id="intruder", repo_url="example/app", image_name="x:1"))
    return call(f"127.0.0.1:{port}", credentials, "/blacktree.v1.Worker/RunJob", request, pb.RunJobReply,
                metadata, stream=True)


def cancel(port, credentials, job_id, metadata=None):
    return call(f"127.0.0.1:{port}", credentials, "/blacktree.v1.Worker/Cancel", pb.CancelRequest(job_id=job_id),
                pb.CancelReply, metadata)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """A CA nobody trusts, with certificates bearing the right names."""
    return CertificateAuthority(tmp_path_factory.mktemp("other-ca"))


def test_unauthenticated_and_wrong_ca_clients_are_refused_by_both_servers(cluster, certs, other_ca):
    orch = cluster.orchestrator()
    w = cluster.worker(orch, "guarded")
    orch.wait_workers(lambda ws: ws.get("guarded") and ws["guarded"].state == FREE, what="'guarded' registered")

    ca = certs.identity(ADMIN_NAME).ca.read_bytes()
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    stranger = other_ca.identity(ORCHESTRATOR_NAME)  # the right name, from the wrong CA
    wrong_ca_client = grpc.ssl_channel_credentials(root_certificates=ca, private_key=stranger.key.read_bytes(),
                                                   certificate_chain=stranger.cert.read_bytes())
    unavailable = grpc.StatusCode.UNAVAILABLE  # the handshake fails: no call gets in
    for credentials in (None, no_client_cert, wrong_ca_client):
        refused(lambda: list_workers(orch.port, credentials), unavailable)
        refused(lambda: ping(w.port, credentials), unavailable)
        refused(lambda: run_job(w.port, credentials), unavailable)
    # A client that trusts only another CA refuses the servers' certificates too.
    refused(lambda: list_workers(orch.port, stranger.channel_credentials()), unavailable)

    # The right CA and a certificate from it: served.
    assert "guarded" in {x.worker.id for x in list_workers(orch.port, orch.admin.channel_credentials()).workers}


def test_a_worker_certificate_cannot_register_or_deregister_another_worker(cluster, certs):
    orch = cluster.orchestrator()
    cluster.worker(orch, "worker-a")
    cluster.worker(orch, "worker-b")
    orch.wait_workers(lambda ws: {"worker-a", "worker-b"} <= set(ws), what="both workers registered")
    as_a = certs.identity("worker-a").channel_credentials()
    target = f"127.0.0.1:{orch.port}"

    e = refused(lambda: call(target, as_a, "/blacktree.v1.Orchestrator/Deregister",
                             pb.DeregisterRequest(worker_id="worker-b", reason="hostile"), pb.DeregisterReply),
                grpc.StatusCode.PERMISSION_DENIED)
    assert "does not name worker 'worker-b'" in e.details()
    # Nor register (take over) B's id, pointing it at an address of A's choosing.
    hijack = pb.WorkerInfo(id="worker-b", address="127.0.0.1:1", capacity=1, incarnation="evil")
    refused(lambda: call(target, as_a, "/blacktree.v1.Orchestrator/Register", pb.RegisterRequest(worker=hijack),
                         pb.RegisterReply), grpc.StatusCode.PERMISSION_DENIED)
    listed = orch.list_workers()
    assert "worker-b" in listed and listed["worker-b"].worker.incarnation != "evil"

    # A registers itself again (same id): allowed.
    again = pb.WorkerInfo(id="worker-a", address=listed["worker-a"].worker.address, capacity=1,
                          incarnation=listed["worker-a"].worker.incarnation)
    reply = call(target, as_a, "/blacktree.v1.Orchestrator/Register", pb.RegisterRequest(worker=again),
                 pb.RegisterReply)
    assert reply.orchestrator_id and len(reply.worker_secret) == 64


def test_only_the_orchestrator_commands_a_worker(cluster, certs):
    """Plaintext with a registration token: only the per-registration secret
    proves the caller is the orchestrator; under mutual TLS also its name."""
    orch = cluster.orchestrator(tls=None, token="shared-token")
    w = cluster.worker(orch, "plain", command=["sh", "-c", "echo working; sleep 60"])
    orch.wait_workers(lambda ws: ws.get("plain") and ws["plain"].state == FREE, what="'plain' registered")
    orch.submit(job("victim"))
    wait_until(lambda: orch.list_workers()["plain"].running == 1, what="the job running on 'plain'")

    unauthenticated, denied = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED
    wrong = [("authorization", "Bearer " + "0" * 64)]
    token = [("authorization", "Bearer shared-token")]  # the registration token is not the worker's secret
    refused(lambda: ping(w.port, None), unauthenticated)
    refused(lambda: run_job(w.port, None), unauthenticated)
    refused(lambda: cancel(w.port, None, "victim"), unauthenticated)
    for metadata in (wrong, token):
        refused(lambda: ping(w.port, None, metadata), denied)
        refused(lambda: run_job(w.port, None, metadata), denied)
        refused(lambda: cancel(w.port, None, "victim", metadata), denied)
    # The job was not cancelled, and the orchestrator's own calls still work.
    assert orch.list_workers()["plain"].running == 1 and orch.list_workers()["plain"].state != pb.WORKER_STATE_DEAD
    assert not orch.results()

    # Under mutual TLS a worker's certificate is not the orchestrator's, and
    # the orchestrator's certificate alone (without the secret) is not enough.
    tls_orch = cluster.orchestrator(name="tls-orchestrator")
    tls_worker = cluster.worker(tls_orch, "tls-worker")
    tls_orch.wait_workers(lambda ws: ws.get("tls-worker") and ws["tls-worker"].state == FREE)
    as_peer = certs.identity("tls-peer").channel_credentials()
    as_orchestrator = certs.identity(ORCHESTRATOR_NAME).channel_credentials()
    e = refused(lambda: ping(tls_worker.port, as_peer), denied)
    assert ORCHESTRATOR_NAME in e.details()
    refused(lambda: run_job(tls_worker.port, as_peer), denied)
    refused(lambda: ping(tls_worker.port, as_orchestrator), unauthenticated)
    refused(lambda: cancel(tls_worker.port, as_orchestrator, "any", wrong), denied)
    tls_orch.submit(job("through-the-front-door"))
    assert tls_orch.status_of("through-the-front-door")["success"]


def test_oversized_capacity_is_refused(cluster, certs):
    orch = cluster.orchestrator()
    greedy = certs.identity("greedy").channel_credentials()
    target = f"127.0.0.1:{orch.port}"
    worker = pb.WorkerInfo(id="greedy", address="127.0.0.1:1", capacity=4_000_000_000, incarnation="i1")
    e = refused(lambda: call(target, greedy, "/blacktree.v1.Orchestrator/Register", pb.RegisterRequest(worker=worker),
                             pb.RegisterReply), grpc.StatusCode.INVALID_ARGUMENT)
    assert "capacity 4000000000 is above this orchestrator's maximum of 64" in e.details()
    assert "greedy" not in orch.list_workers()

    # A real worker asking for 65 slots is told why, and is not registered.
    w = cluster.worker(orch, "big", capacity=65)
    w.wait_log("maximum of 64")
    assert "big" not in orch.list_workers()
    # The maximum is a setting.
    roomy = cluster.orchestrator(name="roomy", extra=["--max-worker-capacity", "128"])
    cluster.worker(roomy, "big-ok", capacity=65)
    roomy.wait_workers(lambda ws: ws.get("big-ok") and ws["big-ok"].worker.capacity == 65)


def server_certificate(port, identity):
    """The DER certificate a fresh TLS connection to 127.0.0.1:port is shown."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(identity.ca))
    context.load_cert_chain(str(identity.cert), str(identity.key))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


def file_certificate(path):
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_certificate_rotation_applies_to_new_connections(cluster, certs, tmp_path):
    # The orchestrator's own copy of the CA's directory, so rotating its
    # certificate leaves the session's alone.
    own = CertificateAuthority(tmp_path / "rotating")
    own.dir.mkdir()
    for name in ("ca.pem", "ca.key"):
        shutil.copy(certs.dir / name, own.dir / name)
    own.make(ORCHESTRATOR_NAME)
    identity = own.identity(ORCHESTRATOR_NAME)
    orch = cluster.orchestrator(tls=identity, extra=["--tls-reload-interval-s", "1"])
    cluster.worker(orch, "rotated")
    orch.wait_workers(lambda ws: ws.get("rotated") and ws["rotated"].state == FREE)
    admin = certs.identity(ADMIN_NAME)
    first = file_certificate(identity.cert)
    assert server_certificate(orch.port, admin) == first

    own.make(ORCHESTRATOR_NAME)  # a new key and certificate, each file replaced at once
    second = file_certificate(identity.cert)
    assert second != first
    wait_until(lambda: server_certificate(orch.port, admin) == second, timeout=20,
               what="a new connection shown the new certificate")
    # Calls over new connections still work: the worker re-registers on a
    # fresh channel, the admin lists it.
    assert "rotated" in orch.list_workers()


def run(binary, *args, timeout=30):
    return subprocess.run([str(BIN_DIR / binary), *args], capture_output=True, text=True, timeout=timeout)


def test_services_refuse_to_run_unauthenticated_unless_insecure(cluster, tmp_path):
    for binary, args in (("blacktree-orchestrator", ["--queue", "stdio", "--listen", "127.0.0.1:0",
                                                     "--http-listen", ""]),
                         ("blacktree-worker", ["--listen", "127.0.0.1:0", "--runner", "noop"])):
        out = run(binary, *args)
        assert out.returncode != 0, (binary, out.stderr)
        message = out.stdout + out.stderr
        assert "will not run unauthenticated" in message, message
        assert "--tls-cert" in message and "--registration-token-file" in message and "--insecure" in message

    # TLS files that are not there are named, with the option.
    out = run("blacktree-orchestrator", "--queue", "stdio", "--tls-cert", str(tmp_path / "missing.pem"),
              "--tls-key", str(tmp_path / "missing.key"), "--tls-ca", str(tmp_path / "ca.pem"))
    assert out.returncode != 0 and "--tls-cert: cannot read the file" in out.stdout + out.stderr

    # Said by name, --insecure runs, warns at start and in /healthz.
    orch = cluster.orchestrator(tls=None, insecure=True)
    orch.wait_log("--insecure")
    status, body = orch.http_get("/healthz")
    assert status == 200 and "insecure" in body
    w = cluster.worker(orch, "insecure-worker", insecure=True)
    w.wait_log("--insecure")
    orch.wait_workers(lambda ws: ws.get("insecure-worker") and ws["insecure-worker"].state == FREE)
