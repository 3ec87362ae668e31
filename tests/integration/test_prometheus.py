# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 16: the alerting rules (deploy/prometheus/) and the Grafana dashboard
(deploy/grafana/) against promtool and a real Prometheus server.

promtool checks the rules, runs their unit tests and checks the scrape
configuration. Then a real `prometheus` (Debian's package, as
scripts/install-deps.sh installs it) scrapes a real orchestrator (AMQP queue,
on a throwaway rabbitmq-server) and two real workers (the argv runner and the
build runner) on free loopback ports, evaluates the shipped rules, and answers
the dashboard's queries. Every metric name the rules and the dashboard use
must be one the processes export, so renaming a metric breaks this test."""

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pika
import pytest

from conftest import SOURCE_DIR, Orchestrator, Process, Worker, free_port, job, wait_until

pytestmark = pytest.mark.timeout(120)

RABBITMQ_SH = Path(__file__).resolve().parents[1] / "support" / "rabbitmq.sh"
RULES = SOURCE_DIR / "deploy" / "prometheus" / "blacktree-rules.yml"
RULES_TEST = SOURCE_DIR / "deploy" / "prometheus" / "blacktree-rules.test.yml"
EXAMPLE_CONFIG = SOURCE_DIR / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = SOURCE_DIR / "deploy" / "grafana" / "blacktree-dashboard.json"

ORCHESTRATOR_JOB = "blacktree-orchestrator"  # the scrape job names the rules select on
WORKER_JOB = "blacktree-worker"

METRIC = re.compile(r"\bblacktree_[a-zA-Z0-9_]+")
SAMPLE_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*")


def tool(name):
    """The path of a Prometheus binary, or a failure saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"'{name}' is not installed (or not on PATH): it comes with Debian's 'prometheus' package, "
                    "which scripts/install-deps.sh installs (apt-get install --no-install-recommends prometheus)")
    return path


def run(*argv, cwd=None):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, cwd=cwd)


def used_names(path: Path) -> set:
    """Every blacktree_* name written in a rules file or the dashboard."""
    return set(METRIC.findall(path.read_text()))


def alert_names() -> list:
    return re.findall(r"^\s*- alert:\s*(\S+)\s*$", RULES.read_text(), re.MULTILINE)


def exported_names(text: str):
    """(every metric name an exposition declares or samples, the names with samples):
    a histogram family declares its _bucket, _sum and _count even before it
    has a sample (a worker's per-stage histogram, before its first build)."""
    declared, sampled = set(), set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            declared.add(name)
            if kind == "histogram":
                declared.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        elif line and not line.startswith("#"):
            sampled.add(SAMPLE_NAME.match(line).group(0))
    return declared | sampled, sampled


def prometheus_config(orchestrators, workers, rule_files=(str(RULES),)) -> str:
    """A configuration scraping the given host:port targets every second, as
    JSON (which is YAML too)."""
    return json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {"job_name": ORCHESTRATOR_JOB, "metrics_path": "/metrics", "static_configs": [{"targets": orchestrators}]},
            {"job_name": WORKER_JOB, "metrics_path": "/metrics", "static_configs": [{"targets": workers}]},
        ],
    }, indent=2)


# --- promtool ------------------------------------------------------------------

def test_rules_pass_promtool_check():
    r = run(tool("promtool"), "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    alerts = alert_names()
    assert f"SUCCESS: {len(alerts)} rules found" in r.stdout, r.stdout
    assert len(alerts) == len(set(alerts)), "two alerts share a name"
    # Each alert has a for:, a severity and both annotations (promtool does not require them).
    blocks = re.split(r"^\s*- alert:", RULES.read_text(), flags=re.MULTILINE)[1:]
    for name, block in zip(alerts, blocks):
        assert re.search(r"^\s+for: \d+[smh]$", block, re.MULTILINE), f"{name}: no for:"
        assert re.search(r"^\s+severity: (critical|warning|info)$", block, re.MULTILINE), f"{name}: no severity"
        assert "summary:" in block and "description:" in block, f"{name}: summary or description missing"


def test_rules_unit_tests_pass():
    text = RULES_TEST.read_text()
    # The unit tests expect alerts to fire and others not to.
    assert len(re.findall(r"^\s+- exp_labels:", text, re.MULTILINE)) >= 2
    assert len(re.findall(r"exp_alerts: \[\]", text)) >= 1
    r = run(tool("promtool"), "test", "rules", str(RULES_TEST))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout, r.stdout


def test_every_alert_is_documented():
    operations = (SOURCE_DIR / "docs" / "operations.md").read_text()
    section = operations[operations.index("## Alerts and dashboards"):]
    missing = [name for name in alert_names() if f"| `{name}` |" not in section]
    assert not missing, f"alerts without a row in docs/operations.md's 'Alerts and dashboards': {missing}"


def test_example_config_passes_promtool_check():
    r = run(tool("promtool"), "check", "config", str(EXAMPLE_CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 1 rule files found" in r.stdout, r.stdout
    # The rules select on the job names the example scrapes under.
    jobs = set(re.findall(r"^\s*- job_name:\s*(\S+)\s*$", EXAMPLE_CONFIG.read_text(), re.MULTILINE))
    assert jobs == {ORCHESTRATOR_JOB, WORKER_JOB}
    assert set(re.findall(r'job="([^"]+)"', RULES.read_text())) == jobs


def test_generated_config_passes_promtool_check(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(["127.0.0.1:9090"], ["127.0.0.1:9091", "127.0.0.1:9092"]))
    r = run(tool("promtool"), "check", "config", str(config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout and "1 rule files found" in r.stdout, r.stdout
    # And promtool does reject a broken one (a rules file that is not there): this check can fail.
    config.write_text(prometheus_config(["127.0.0.1:9090"], ["127.0.0.1:9091"],
                                        rule_files=[str(tmp_path / "no-such-rules.yml")]))
    r = run(tool("promtool"), "check", "config", str(config))
    assert r.returncode != 0, r.stdout


def test_dashboard_is_a_grafana_dashboard():
    board = json.loads(DASHBOARD.read_text())
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "two panels share an id"
    queries = [p for p in board["panels"] if p["type"] != "row"]
    assert len(queries) >= 10
    for panel in queries:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert METRIC.search(target["expr"]) or target["expr"].startswith("sum by (job) (up{"), \
                f"{panel['title']}: {target['expr']}"
    # The latency panels read the histograms' _bucket series.
    exprs = " ".join(t["expr"] for p in queries for t in p["targets"])
    for histogram in ("blacktree_job_queue_wait_seconds", "blacktree_job_run_duration_seconds",
                      "blacktree_worker_job_duration_seconds", "blacktree_worker_stage_duration_seconds"):
        assert f"histogram_quantile(0.9, sum by" in exprs and f"{histogram}_bucket" in exprs, histogram


# --- a real Prometheus ----------------------------------------------------------

class Broker:
    def __init__(self, directory: Path):
        self.dir = directory
        subprocess.run(["bash", str(RABBITMQ_SH), "start", str(directory)], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
        self.port = int((directory / "port").read_text())
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def stop(self):
        subprocess.run(["bash", str(RABBITMQ_SH), "stop", str(self.dir)], timeout=120, stdout=subprocess.DEVNULL)

    def publish(self, queue, bodies):
        with pika.BlockingConnection(pika.URLParameters(self.url)) as conn:
            ch = conn.channel()
            ch.queue_declare(queue=queue, durable=True)
            ch.confirm_delivery()
            for body in bodies:
                ch.basic_publish(exchange="", routing_key=queue, body=body.encode(),
                                 properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("rabbitmq"))
    yield b
    b.stop()


class Prometheus(Process):
    """A prometheus server on a free loopback port, its data in a temporary directory."""

    def __init__(self, tmp_path, config_text):
        binary = tool("prometheus")
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(config_text)
        self.http_port = free_port()
        super().__init__("prometheus", [binary, f"--config.file={self.config}",
                                        f"--storage.tsdb.path={self.dir / 'data'}",
                                        f"--web.listen-address=127.0.0.1:{self.http_port}"],
                         tmp_path / "prometheus.log")
        try:
            wait_until(lambda: self.proc.poll() is not None or self.http_get("/-/ready")[0] == 200, 30,
                       "prometheus to be ready")
            assert self.proc.poll() is None, f"prometheus exited with {self.proc.returncode}"
        except AssertionError as e:
            self.close()
            raise AssertionError(f"{e}:\n{self.log()}") from None

    def http_get(self, path):
        try:
            return super().http_get(path)
        except (urllib.error.URLError, ConnectionError):
            return 0, ""

    def api(self, path, **params):
        """GET /api/v1/<path>: its `data`, after asserting success."""
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = self.http_get(f"/api/v1/{path}" + (f"?{query}" if query else ""))
        reply = json.loads(body) if body else {}
        assert status == 200 and reply.get("status") == "success", f"/api/v1/{path} {params}: {status} {body}"
        return reply["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def targets(self):
        return {(t["labels"]["job"], t["labels"]["instance"]): t for t in self.api("targets")["activeTargets"]}

    def wait_value(self, expr, expected, what, timeout=30.0):
        """Polls an instant query until it returns exactly one series whose value is `expected`."""
        def check():
            result = self.query(expr)
            return result if len(result) == 1 and float(result[0]["value"][1]) == expected else None
        return wait_until(check, timeout, f"{what} ({expr} == {expected})", interval=0.2)

    def rules(self):
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def alerts(self, name):
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


class Stack:
    """An orchestrator on the AMQP queue, an argv worker (region `argv`: the
    jobs go there) and a build worker (region `build`: no job goes there; it
    exports the image cache's metrics), each with /metrics, and a prometheus
    scraping all three every second with the shipped rules loaded."""

    def __init__(self):
        self.processes = []

    def start(self, tmp_path, broker):
        suffix = uuid.uuid4().hex[:8]
        self.execute_queue = f"execute.{suffix}"
        self.orchestrator = self._start(Orchestrator(tmp_path, amqp={
            "mq-url": broker.url, "execute-queue": self.execute_queue, "status-queue": f"status.{suffix}",
            "events-exchange": f"events.{suffix}", "dead-letter-exchange": f"dlx.{suffix}",
            "dead-letter-queue": f"dead.{suffix}"}))
        self.argv_worker = self._start(Worker(
            tmp_path, self.orchestrator.port, "w-argv", ["sh", "-c", 'case "$BLACKTREE_JOB_ID" in bad-*) exit 3;; esac'],
            region="argv", capacity=2, http=True))
        self.build_worker = self._start(Worker(
            tmp_path, self.orchestrator.port, "w-build", [], region="build", http=True,
            extra=["--runner", "build", "--registry", f"127.0.0.1:{free_port()}", "--registry-insecure",
                   "--build-network", "host", "--work-root", str(tmp_path / "build-work"),
                   "--cache-dir", str(tmp_path / "build-cache")]))
        self.workers = [self.argv_worker, self.build_worker]
        # Broker connected and both workers registered before anything is measured.
        wait_until(lambda: self.orchestrator.http_get("/healthz")[0] == 200, 30, "the orchestrator's /healthz 200")
        for w in self.workers:
            wait_until(lambda: w.http_get("/healthz")[0] == 200, 30, f"{w.name} registered")
        self.prometheus = self._start(Prometheus(tmp_path, prometheus_config(
            [self.instance(self.orchestrator)], [self.instance(w) for w in self.workers])))

    def _start(self, process):
        self.processes.append(process)
        return process

    @staticmethod
    def instance(process):
        return f"127.0.0.1:{process.http_port}"

    def wait_targets_up(self):
        expected = {(ORCHESTRATOR_JOB, self.instance(self.orchestrator))} | \
                   {(WORKER_JOB, self.instance(w)) for w in self.workers}
        seen = {}

        def check():
            seen.update(targets=self.prometheus.targets())  # discovered a moment after the start
            return set(seen["targets"]) == expected and all(t["health"] == "up" for t in seen["targets"].values())
        try:
            wait_until(check, 30, "prometheus to scrape exactly our three targets successfully", interval=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}; targets: {seen.get('targets')}\n{self.logs()}") from None

    def logs(self):
        return "\n".join(f"--- {p.name}\n{p.log()[-3000:]}" for p in self.processes)

    def close(self):
        for p in reversed(self.processes):
            if isinstance(p, Prometheus):
                p.terminate(timeout=30)  # SIGTERM to its pid, then wait
            p.close()


@pytest.fixture
def stack(tmp_path, broker):
    s = Stack()
    try:
        s.start(tmp_path, broker)
        yield s
    finally:
        s.close()  # every process it started, by its pid


def test_prometheus_scrapes_the_orchestrator_and_the_workers(stack):
    prom = stack.prometheus
    stack.wait_targets_up()
    orch = stack.instance(stack.orchestrator)
    # A series from each process, under its own job and instance.
    result = prom.wait_value(f'blacktree_jobs_in_flight{{job="{ORCHESTRATOR_JOB}"}}', 0, "the orchestrator's gauge")
    assert result[0]["metric"]["instance"] == orch
    prom.wait_value(f'sum(blacktree_workers{{job="{ORCHESTRATOR_JOB}", instance="{orch}", state="free"}})', 2,
                    "both workers free")
    prom.wait_value(f'blacktree_worker_slots{{instance="{orch}"}}', 3, "three slots (2 + 1)")
    prom.wait_value(f'min(blacktree_amqp_connected{{instance="{orch}"}})', 1, "the broker connections up")
    for w in stack.workers:
        prom.wait_value(f'blacktree_worker_jobs_running{{job="{WORKER_JOB}", instance="{stack.instance(w)}"}}', 0,
                        f"{w.name}'s gauge")
    prom.wait_value(f'count(blacktree_worker_cache_size_bytes{{job="{WORKER_JOB}"}})', 1,
                    "the build worker's cache size")


def test_every_metric_the_rules_and_the_dashboard_use_is_exported(stack):
    used = used_names(RULES) | used_names(DASHBOARD)
    assert len(used) >= 20, used
    declared, sampled = set(), set()
    for process in (stack.orchestrator, *stack.workers):
        status, text = process.http_get("/metrics")
        assert status == 200
        d, s = exported_names(text)
        declared |= d
        sampled |= s
    assert not used - declared, f"named in deploy/ but exported by no process: {sorted(used - declared)}"
    # And prometheus ingested every one of them that has samples yet.
    stack.wait_targets_up()
    wanted = used & sampled
    wait_until(lambda: wanted <= set(stack.prometheus.api("label/__name__/values")), 30,
               f"prometheus to know {sorted(wanted)}", interval=0.2)


def test_jobs_show_in_prometheus_by_outcome(stack, broker):
    prom, orch = stack.prometheus, stack.instance(stack.orchestrator)
    argv_worker = stack.instance(stack.argv_worker)
    stack.wait_targets_up()
    broker.publish(stack.execute_queue, [json.dumps(job(f"good-{i}", region="argv")) for i in range(3)] +
                   [json.dumps(job("bad-1", region="argv"))])
    try:
        prom.wait_value(f'blacktree_jobs_succeeded_total{{instance="{orch}"}}', 3, "three successes", timeout=60)
        prom.wait_value(f'blacktree_jobs_failed_total{{instance="{orch}"}}', 1, "one failure")
        prom.wait_value(f'blacktree_worker_jobs_total{{instance="{argv_worker}", outcome="succeeded"}}', 3,
                        "the worker's successes")
        prom.wait_value(f'blacktree_worker_jobs_total{{instance="{argv_worker}", outcome="failed"}}', 1,
                        "the worker's failure")
        prom.wait_value(f'blacktree_job_queue_wait_seconds_count{{instance="{orch}"}}', 4, "four placements")
        prom.wait_value(f'blacktree_jobs_in_flight{{instance="{orch}"}}', 0, "all settled")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{stack.logs()}") from None
    # The histograms' buckets are what histogram_quantile needs: a number, within the buckets.
    for metric, instance in (("blacktree_job_queue_wait_seconds", orch),
                             ("blacktree_job_run_duration_seconds", orch),
                             ("blacktree_worker_job_duration_seconds", argv_worker)):
        result = prom.query(f'histogram_quantile(0.9, sum by (le) ({metric}_bucket{{instance="{instance}"}}))')
        assert len(result) == 1, (metric, result)
        value = float(result[0]["value"][1])
        assert 0 <= value <= 3600, (metric, value)
    # Nothing went to the build worker.
    prom.wait_value(f'sum(blacktree_worker_jobs_total{{instance="{stack.instance(stack.build_worker)}"}})', 0,
                    "no job on the build worker")


def dashboard_queries():
    """(panel title, PromQL) of every dashboard target, with Grafana's
    variables as a dashboard showing everything would fill them in."""
    board = json.loads(DASHBOARD.read_text())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("$__rate_interval", "30s")
                    .replace("$orchestrator", ".*").replace("$worker", ".*"))
            out.append((panel["title"], expr))
    return out


def test_the_rules_evaluate_and_the_dashboard_queries_run(stack):
    prom = stack.prometheus
    stack.wait_targets_up()
    names = alert_names()

    def evaluated():
        rules = prom.rules()
        # lastEvaluation is 0001-01-01T00:00:00Z until the first evaluation.
        return rules if len(rules) == len(names) and all(_ts(r["lastEvaluation"]) > 0 for r in rules) else None
    rules = wait_until(evaluated, 30, "every rule evaluated once", interval=0.2)
    assert sorted(r["name"] for r in rules) == sorted(names)
    for rule in rules:
        # Evaluated without error against the real series (e.g. no many-to-many matching).
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"

    for title, expr in dashboard_queries():
        prom.query(expr)  # asserts success: valid PromQL the server can run
    # The dashboard's variables list the instances it filters on.
    board = json.loads(DASHBOARD.read_text())
    expected = {"orchestrator": {stack.instance(stack.orchestrator)},
                "worker": {stack.instance(w) for w in stack.workers}}
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
        assert m, variable["definition"]
        series = prom.api("series", **{"match[]": m.group(1)})
        assert {s[m.group(2)] for s in series} == expected[variable["name"]], variable["name"]
    # With data flowing, the panels have something to show: a few that must.
    wait_until(lambda: prom.query('sum by (state) (blacktree_workers{instance=~".*"})'), 20, "workers by state")
    wait_until(lambda: prom.query('sum(blacktree_worker_slots_busy{instance=~".*"}) / sum(blacktree_worker_slots{instance=~".*"})'),
               20, "slots in use")


def test_a_worker_that_stops_makes_its_alert_pending_and_no_other(stack):
    prom = stack.prometheus
    stack.wait_targets_up()
    gone = stack.instance(stack.argv_worker)
    # Everything up and evaluated after that: nothing about a process down.
    start = prom.api("query", query="time()")["result"][1]
    wait_until(lambda: all(_ts(r["lastEvaluation"]) > float(start) for r in prom.rules()), 30,
               "the rules evaluated with every target up", interval=0.2)
    for name in ("BlacktreeWorkerDown", "BlacktreeOrchestratorDown", "BlacktreeOrchestratorAbsent",
                 "BlacktreeNoLiveWorkers", "BlacktreeBrokerConnectionDown"):
        assert prom.alerts(name) == [], name

    assert stack.argv_worker.terminate(timeout=60) == 0  # drains, deregisters, exits
    wait_until(lambda: prom.targets()[(WORKER_JOB, gone)]["health"] == "down", 30, "the stopped worker's target down",
               interval=0.2)
    alerts = wait_until(lambda: prom.alerts("BlacktreeWorkerDown"), 30, "BlacktreeWorkerDown", interval=0.2)
    assert [(a["labels"]["instance"], a["labels"]["job"], a["labels"]["severity"], a["state"]) for a in alerts] == \
        [(gone, WORKER_JOB, "warning", "pending")]  # for: 5m, so pending now
    assert "is down" in alerts[0]["annotations"]["summary"] and gone in alerts[0]["annotations"]["summary"]
    # The other worker and the orchestrator are still scraped: their alerts stay quiet.
    assert prom.alerts("BlacktreeOrchestratorDown") == []
    assert prom.targets()[(WORKER_JOB, stack.instance(stack.build_worker))]["health"] == "up"


def _ts(rfc3339):
    """Seconds since the epoch of a timestamp the API returns (2026-12-06T10:31:13.123456789Z)."""
    from datetime import datetime, timezone
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", rfc3339)
    assert m, rfc3339
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    offset = 0 if m.group(3) == "Z" else (1 if m.group(3)[0] == "+" else -1) * (
        int(m.group(3)[1:3]) * 3600 + int(m.group(3)[4:6]) * 60)
    fraction = float("0." + m.group(2)) if m.group(2) else 0.0
    return base.replace(tzinfo=timezone.utc).timestamp() - offset + fraction
