# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 6: the README's main job, minus package installation and the build
(the test runs on the build under test): a real image built and pushed
through RabbitMQ, the orchestrator and a worker, with the digest the
registry reports; run twice in a row; the CLI and /metrics on that stack."""

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import BIN_DIR

ROOT = Path(__file__).resolve().parents[2]


def shell_env(stack_dir):
    env = dict(os.environ, BLACKTREE_STACK_DIR=str(stack_dir), BUILD_DIR=str(BIN_DIR.resolve().parent),
               SKIP_DEPS="1", SKIP_BUILD="1")
    return env


@pytest.fixture
def stack_dir(tmp_path):
    d = tmp_path / "stack"
    yield d
    subprocess.run(["bash", str(ROOT / "scripts" / "stack.sh"), "down"], env=shell_env(d), timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_env(stack_dir):
    return dict(line.split("=", 1) for line in (stack_dir / "stack.env").read_text().splitlines() if "=" in line)


@pytest.mark.timeout(900)
def test_main_job_builds_and_pushes_twice(stack_dir):
    for run in (1, 2):
        done = subprocess.run(["bash", str(ROOT / "scripts" / "main-job.sh")], env=shell_env(stack_dir),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"run {run}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        digest = re.search(r"^digest: (sha256:[0-9a-f]{64})$", done.stdout, re.M).group(1)
        assert f"the registry reports " in done.stdout and done.stdout.count(digest) >= 2
        for phase in ("[cloning]", "[building]", "[pushing]"):
            assert phase in done.stdout + done.stderr, f"progress for {phase} was shown"

        env = read_env(stack_dir)
        # The registry itself, asked independently, has that digest.
        inspect = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--creds",
             f"{env['REGISTRY_USER']}:{Path(env['REGISTRY_PASSWORD_FILE']).read_text().strip()}",
             f"docker://{env['REGISTRY']}/demo/sample-app:demo"], capture_output=True, text=True, timeout=60)
        assert inspect.returncode == 0, inspect.stderr
        assert json.loads(inspect.stdout)["Digest"] == digest

        # The GitHub token never reached the orchestrator's or workers' logs.
        token = Path(env["GITHUB_TOKEN_FILE"]).read_text().strip()
        for log in (stack_dir / "logs").glob("*.log"):
            assert token not in log.read_text(errors="replace"), log

    # The CLI lists both workers; /metrics counts the job of this (second) stack.
    tls = {k: v for k, v in env.items() if k.startswith("BLACKTREE_TLS_")}  # the admin's certificate (mutual TLS)
    workers = subprocess.run([str(BIN_DIR / "blacktree"), "workers", "--orchestrator-addr", env["ORCHESTRATOR_ADDR"],
                              "--json"], capture_output=True, text=True, timeout=30, env=dict(os.environ, **tls))
    assert workers.returncode == 0, workers.stderr
    listed = {w["worker"]["id"]: w for w in json.loads(workers.stdout)["workers"]}
    assert set(listed) == {"worker-eu-west", "worker-us-east"}
    assert listed["worker-us-east"]["worker"]["labels"]["region"] == "us-east"
    with urllib.request.urlopen(env["METRICS_URL"], timeout=10) as r:
        text = r.read().decode()
    assert re.search(r"^blacktree_jobs_succeeded_total 1$", text, re.M), text
    assert re.search(r"^blacktree_jobs_failed_total 0$", text, re.M)
