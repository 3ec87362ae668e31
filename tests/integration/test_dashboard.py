# Copyright 2026 The blacktree Authors. SPDX-License-Identifier: Apache-2.0
"""Issue 16: the orchestrator's dashboard in a real headless Chromium (Debian's
chromium, driven through chromedriver's WebDriver HTTP API with nothing but
urllib), against a real orchestrator and worker: the page lists the workers and
the jobs, a running job's lines appear on its page as the job writes them
(server-sent events), the static parts work with JavaScript disabled, and the
page is read-only unless an admin token is configured."""

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import free_port, job, wait_until

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element key

# A job that writes a line, then waits for the test's go-ahead on a FIFO (so
# the test controls when each later line is written), in the job's own shell.
GATED = ('echo "first line of $BLACKTREE_JOB_ID <i>&amp;</i>"; '
         'read _ < "$0.$BLACKTREE_JOB_ID.go"; '
         'echo "second line, written after the page loaded"; '
         'read _ < "$0.$BLACKTREE_JOB_ID.end"; echo "last line"')

class WebDriver:
    """The few W3C WebDriver calls the tests need, over chromedriver's HTTP API."""

    def __init__(self, tmp_path, javascript=True):
        assert CHROMIUM and CHROMEDRIVER, ("Debian's chromium and chromium-driver are needed "
                                           "(scripts/install-deps.sh installs them)")
        self.port = free_port()
        self.log = open(tmp_path / "chromedriver.log", "ab")
        self.proc = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}"], stdout=self.log, stderr=self.log)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: self._ready(), timeout=30, what="chromedriver listening")
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"]
        if not javascript:
            args.append("--blink-settings=scriptEnabled=false")
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome",
                                                 "goog:chromeOptions": {"binary": CHROMIUM, "args": args}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _ready(self):
        try:
            with urllib.request.urlopen(self.base + "/status", timeout=2) as r:
                return json.load(r)["value"]["ready"]
        except (OSError, ValueError, KeyError):
            return False

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"WebDriver {method} {path}: {e.code} {e.read()[:500]!r}")

    def open(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def text(self, css):
        """The visible text of the first element matching `css`, or None."""
        found = self._call("POST", f"/session/{self.session}/elements", {"using": "css selector", "value": css})
        if not found:
            return None
        return self._call("GET", f"/session/{self.session}/element/{found[0][ELEMENT]}/text")

    def close(self):
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.log.close()


@pytest.fixture
def browser(tmp_path):
    made = []

    def make(javascript=True):
        made.append(WebDriver(tmp_path / ("js" if javascript else "nojs"), javascript))
        return made[-1]
    (tmp_path / "js").mkdir()
    (tmp_path / "nojs").mkdir()
    yield make
    for b in made:
        b.close()


def http(url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=20) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture
def farm(cluster, tmp_path):
    token = tmp_path / "admin-token"
    token.write_text("s3cret-admin-token\n")
    orch = cluster.orchestrator(extra=["--dashboard-admin-token-file", str(token)])
    gate = tmp_path / "gate"
    cluster.worker(orch, "w-dash", command=["sh", "-c", GATED, str(gate)], capacity=2, labels=["pool=web"])
    orch.wait_workers(lambda ws: ws.get("w-dash") and ws["w-dash"].state == 2, what="the worker free")
    return orch, gate


def gated_submit(orch, gate, job_id):
    """Submits `job_id` with its two FIFOs in place."""
    for step in ("go", "end"):
        os.mkfifo(gate.parent / f"{gate.name}.{job_id}.{step}")
    orch.submit(job(job_id))


def release(gate, job_id, step):
    """Lets job `job_id` past `step` once it waits there (its shell opened the FIFO)."""
    path = gate.parent / f"{gate.name}.{job_id}.{step}"

    def opened():
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until a reader has it open
        except OSError:
            return None
    fd = wait_until(lambda: opened(), timeout=30, what=f"job {job_id} waiting at {step}")
    os.write(fd, b"go\n")
    os.close(fd)


@pytest.mark.timeout(180)
def test_the_page_shows_workers_and_a_running_jobs_lines_as_they_arrive(farm, browser):
    orch, gate = farm
    base = f"http://127.0.0.1:{orch.http_port}"
    gated_submit(orch, gate, "live-1")
    wait_until(lambda: "first line of live-1" in http(base + "/jobs/live-1")[2], what="the job's first line")

    b = browser()
    b.open(base + "/")
    workers = b.text("#workers")
    assert "w-dash" in workers and "pool=web" in workers and "live-1" in workers, workers
    assert "live-1" in b.text("#in-flight-jobs")

    b.open(base + "/jobs/live-1")
    assert "first line of live-1" in b.text("#log")
    assert "second line" not in b.text("#log")
    release(gate, "live-1", "go")  # written now, after the page loaded: only the live tail can show it
    wait_until(lambda: "second line, written after the page loaded" in b.text("#log"), timeout=30,
               what="the second line on the open page")
    release(gate, "live-1", "end")
    wait_until(lambda: b.text("#state") == "succeeded", timeout=30, what="the page saying the job succeeded")
    assert "last line" in b.text("#log")
    assert orch.status_of("live-1")["success"]

    b.open(base + "/")
    assert "live-1" in b.text("#finished") and "succeeded" in b.text("#finished")


@pytest.mark.timeout(180)
def test_without_javascript_the_static_parts_work(farm, browser):
    orch, gate = farm
    base = f"http://127.0.0.1:{orch.http_port}"
    gated_submit(orch, gate, "static-1")
    wait_until(lambda: "first line of static-1" in http(base + "/jobs/static-1")[2], what="the job's first line")
    b = browser(javascript=False)
    b.open(base + "/")
    assert "w-dash" in b.text("#workers")
    assert "static-1" in b.text("#in-flight-jobs")
    b.open(base + "/jobs/static-1")
    assert "first line of static-1" in b.text("#log")
    assert "Reload for newer lines" in b.text("noscript")  # shown: scripts are off
    release(gate, "static-1", "go")
    release(gate, "static-1", "end")
    orch.status_of("static-1")
    b.open(base + "/jobs/static-1")  # a reload shows it all
    assert "last line" in b.text("#log")
    assert b.text("#state") == "succeeded"


@pytest.mark.timeout(120)
def test_cancel_from_the_page_needs_the_admin_token(farm, cluster, tmp_path):
    orch, gate = farm
    base = f"http://127.0.0.1:{orch.http_port}"
    gated_submit(orch, gate, "to-cancel")
    wait_until(lambda: "first line of to-cancel" in http(base + "/jobs/to-cancel")[2], what="the job running")
    form = urllib.parse.urlencode({"token": "wrong", "reason": "x"}).encode()
    assert http(base + "/jobs/to-cancel/cancel", form)[0] == 403
    assert http(base + "/jobs/to-cancel/cancel", b"")[0] == 403
    form = urllib.parse.urlencode({"token": "s3cret-admin-token", "reason": "from the page"}).encode()
    status, headers, _ = http(base + "/jobs/to-cancel/cancel", form)
    assert status == 303 and headers["Location"].startswith("/jobs/to-cancel?notice="), (status, headers)
    stopped = orch.status_of("to-cancel", timeout=30)
    assert stopped["cancelled"] is True and "from the page" in stopped["error"], stopped

    # Without an admin token the page has no cancel form, and a POST is refused.
    other = cluster.orchestrator(name="read-only")
    cluster.worker(other, "w-ro", command=["sh", "-c", GATED, str(gate)], capacity=1)
    other.wait_workers(lambda ws: ws.get("w-ro") and ws["w-ro"].state == 2, what="the worker free")
    gated_submit(other, gate, "ro-1")
    ro = f"http://127.0.0.1:{other.http_port}"
    wait_until(lambda: "first line of ro-1" in http(ro + "/jobs/ro-1")[2], what="the job running")
    assert "<form" not in http(ro + "/jobs/ro-1")[2]
    assert http(ro + "/jobs/ro-1/cancel", form)[0] == 403
    release(gate, "ro-1", "go")
    release(gate, "ro-1", "end")
    assert other.status_of("ro-1")["success"]


@pytest.mark.timeout(60)
def test_pages_are_self_contained_and_escape_what_they_show(farm):
    orch, gate = farm
    base = f"http://127.0.0.1:{orch.http_port}"
    status, headers, body = http(base + "/")
    assert status == 200
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "http://" not in body.replace(base, "") and "https://" not in body  # nothing from elsewhere
    gated_submit(orch, gate, "esc-1")
    wait_until(lambda: "first line of esc-1" in http(base + "/jobs/esc-1")[2], what="the job's first line")
    body = http(base + "/jobs/esc-1")[2]
    assert "<i>&amp;</i>" not in body and "&lt;i&gt;&amp;amp;&lt;/i&gt;" in body, body
    assert http(base + "/jobs/no-such-job")[0] == 404
    assert http(base + "/jobs/bad%2Fid")[0] == 404
    release(gate, "esc-1", "go")
    release(gate, "esc-1", "end")
    orch.status_of("esc-1")
