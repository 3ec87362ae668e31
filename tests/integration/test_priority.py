# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 16: job priorities through the real processes. `blacktree submit
--priority N` puts N in the JobRequest and in the message's AMQP priority, so
an execute queue declared with x-max-priority hands the orchestrator the
highest waiting job first (FIFO among equals): one worker of capacity 1 runs a
backlog of mixed priorities in that order."""

import subprocess

import pytest

from conftest import BIN_DIR, wait_until
from test_amqp_e2e import amqp_flags, broker, names  # noqa: F401

CLI = str(BIN_DIR / "blacktree")

# In the order they are submitted; job i is "p<priority>-<i>".
PRIORITIES = [3, 9, 0, 5, 9, 1, 3, 7, 0, 5, 2, 9, 3, 7, 1, 8, 0, 5, 4, 9]


def submit(broker, queue, job_id, priority):
    return subprocess.run([CLI, "submit", "--repo", "octo/app", "--image", "app:1", "--job-id", job_id,
                           "--priority", str(priority), "--mq-url", broker.url, "--execute-queue", queue],
                          capture_output=True, text=True, timeout=60)


def queue_state(broker, queue):
    """(ready messages, consumers) of `queue`."""
    with broker.connection() as conn:
        ok = conn.channel().queue_declare(queue=queue, passive=True)
    return ok.method.message_count, ok.method.consumer_count


@pytest.mark.timeout(240)
def test_priority_order_observed_with_one_worker_and_a_queue_of_mixed_priorities(cluster, broker, names,  # noqa: F811
                                                                                tmp_path):
    queue = names["execute-queue"]
    # Declared by us before the orchestrator, which then uses it as it is.
    with broker.connection() as conn:
        conn.channel().queue_declare(queue=queue, durable=True, arguments={"x-max-priority": 9})
    orch = cluster.orchestrator(amqp=amqp_flags(broker, names))

    # No worker yet: the orchestrator's prefetch is 0, so it has no consumer
    # and takes nothing; the whole backlog waits on the broker, where the
    # priorities order it.
    ids = [f"p{priority}-{i:02d}" for i, priority in enumerate(PRIORITIES)]
    for job_id, priority in zip(ids, PRIORITIES):
        r = submit(broker, queue, job_id, priority)
        assert r.returncode == 0, r.stderr
    assert queue_state(broker, queue) == (len(ids), 0)

    # One slot: the orchestrator takes one job at a time (prefetch 1), the
    # next only once the last is settled, so the worker runs them in the
    # order the broker hands them out.
    marks = tmp_path / "ran"
    cluster.worker(orch, "w-one", command=["sh", "-c", 'echo "$BLACKTREE_JOB_ID" >> "$0"', str(marks)], capacity=1)

    def ran():
        done = marks.read_text().split() if marks.exists() else []
        return done if len(done) >= len(ids) else None
    order = wait_until(ran, timeout=180, what=f"all {len(ids)} jobs run")

    assert sorted(order) == sorted(ids), order  # each once
    priorities = [int(job_id[1]) for job_id in order]
    assert priorities == sorted(priorities, reverse=True), order
    for priority in set(PRIORITIES):  # FIFO among equals
        same = [job_id for job_id in order if int(job_id[1]) == priority]
        assert same == [job_id for job_id in ids if int(job_id[1]) == priority], (priority, order)


@pytest.mark.timeout(60)
def test_priority_above_9_is_refused_naming_the_flag(broker, names):  # noqa: F811
    queue = names["execute-queue"]
    with broker.connection() as conn:
        conn.channel().queue_declare(queue=queue, durable=True, arguments={"x-max-priority": 9})
    r = submit(broker, queue, "too-high", 10)
    assert r.returncode == 64
    assert "--priority is 10: it must be 0 to 9" in r.stderr, r.stderr
    assert r.stdout == ""
    assert queue_state(broker, queue) == (0, 0)  # nothing published
