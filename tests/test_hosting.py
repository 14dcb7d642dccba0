"""Safe to host in public, checked as an outside caller: the real server (`python app.py`) in a
subprocess, reached with plain HTTP, gradio_client and a headless browser. Its memory, threads and
session folders are read from /proc and its temporary directory."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, config_json, free_port
from gradio_client import Client, handle_file
from test_uploads import HOSTILE, ISSUE_TABLE_MB

QUICK = dict(iterations=20, points=300, coarse_points=300, sphere_level=2)
LONG = dict(iterations=20000, points=300, coarse_points=300, sphere_level=2)
HUGE = dict(grid_size=256, image_size=256, views_per_step=40, points_per_ray=512, iterations=20000)


class Server:
    """`python app.py` in a subprocess, with this test's environment and temporary directory."""

    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        (tmp / "tmp").mkdir()
        self.log_path = tmp / "server.log"
        environ = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                   "GRADIO_ANALYTICS_ENABLED": "False", "RECON_DEVICE": "cpu", "PYTHONUNBUFFERED": "1",
                   "TMPDIR": str(tmp / "tmp"), "GRADIO_TEMP_DIR": str(tmp / "gradio"), "RECON_WARM_UP": "0",
                   "RECON_MAX_RUNS": "1", "RECON_RUN_MEMORY_GB": "3", **env}
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=environ, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:
                    assert resp.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, self.log_path.read_text()
                time.sleep(0.3)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/task"))

    def session_folders(self) -> list[Path]:
        return list((self.tmp / "tmp").glob("recon-session-*"))

    def alive(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A short session time to live (longer than any one handler: the exports after a run take seconds).
    srv = Server(tmp_path_factory.mktemp("hosting"), RECON_SESSION_TTL="10", RECON_PAUSE_TIMEOUT="3")
    yield srv
    srv.close()


def settle(srv: Server, seconds: float = 1.0) -> float:
    """Wait until the server's memory stops moving (imports, caches), then return it."""
    last = srv.rss_mb()
    while True:
        time.sleep(seconds)
        now = srv.rss_mb()
        if abs(now - last) < 5:
            return now
        last = now


def test_a_near_maximum_volume_is_refused_with_its_price_and_the_server_barely_grows(server):
    client = Client(server.url, verbose=False)
    client.predict(config_json(**QUICK), None, api_name="/fit")  # warm: imports, the cow, the first run
    before = settle(server)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        client.predict(config_json("volume", **HUGE), None, api_name="/fit")
    message = str(info.value)
    assert time.monotonic() - t0 < 5
    assert "needs about" in message and "GB" in message and "grid size" in message.lower(), message
    assert server.rss_mb() - before < 300
    nerf = client.predict(config_json("nerf", hidden=512, harmonic_functions=60, rays_per_image=8192,
                                      points_per_ray=512, views_per_step=40), api_name="/estimate")
    assert nerf["fits"] is False and nerf["memory_gb"] > 100
    assert server.alive()
    client.close()


@pytest.mark.parametrize("name", [*ISSUE_TABLE_MB, "fifty_million_binary.ply"])
def test_hostile_uploads_are_refused_fast_and_small(server, tmp_path, name):
    make, _ = HOSTILE[name]
    path = tmp_path / name
    data = make()
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    client = Client(server.url, verbose=False)
    before = settle(server, 0.5)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        client.predict(config_json(**QUICK), handle_file(str(path)), api_name="/fit")
    assert time.monotonic() - t0 < 3.0, name
    assert server.rss_mb() - before < 300, name
    assert any(word in str(info.value) for word in ("corners", "too complex", "declares", "damaged")), str(info.value)
    assert server.alive()
    client.close()


def _plain_http_run(url: str) -> str:
    req = urllib.request.Request(f"{url}gradio_api/call/fit", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"data": [config_json(**QUICK), None]}).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        event = json.loads(resp.read())["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/fit/{event}", timeout=120) as resp:
        body = resp.read().decode()
    return body


def test_the_page_brings_its_own_plotly_and_serves_nothing_else_of_the_disk(server):
    """The charts' plotly.js comes from the server itself (the app runs offline); the static path
    that allows it is that one file, not its folder or the code."""
    with urllib.request.urlopen(f"{server.url}config", timeout=10) as resp:
        config = json.loads(resp.read())
    heads = {c["props"].get("head") for c in config["components"] if c.get("type") == "html"} - {None, ""}
    (src,) = {re.search(r'src="([^"]+)"', h).group(1) for h in heads}
    assert not src.startswith(("http:", "https:", "//"))
    with urllib.request.urlopen(server.url + src, timeout=10) as resp:
        body = resp.read()
    assert resp.status == 200 and b"plotly.js" in body[:2000] and len(body) > 1_000_000
    folder = src.rsplit("/", 1)[0]
    for other in (f"{folder}/widgetbundle.js", f"gradio_api/file={ROOT / 'app.py'}"):
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(server.url + other, timeout=10)


def test_plain_http_runs_leave_no_session_folder_and_no_thread_behind(server):
    for _ in range(3):  # warm: the web server's pool of worker threads grows to what a run uses, then stays
        _plain_http_run(server.url)
    time.sleep(5)
    threads = server.threads()
    for _ in range(10):
        body = _plain_http_run(server.url)
        assert "event: complete" in body and '"state": "done"' in body.replace('"state":"done"', '"state": "done"')
    time.sleep(10 + 2)  # RECON_SESSION_TTL, and a little
    assert server.session_folders() == []
    assert server.threads() <= threads, (server.threads(), threads)


def test_a_cancelled_api_job_frees_the_slot_within_a_second(server):
    a, b = Client(server.url, verbose=False), Client(server.url, verbose=False)
    job = a.submit(config_json(**LONG), None, api_name="/fit")
    deadline = time.monotonic() + 60
    while not any(o[0]["state"] == "running" for o in job.outputs()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.cancel()
    t0 = time.monotonic()
    second = b.submit(config_json(**QUICK), None, api_name="/fit")
    while not any(o[0]["state"] in ("running", "done") for o in second.outputs()):
        assert time.monotonic() - t0 < 20, second.outputs()[-1:]
        time.sleep(0.02)
    # the slot came free at once: the second run only waited for its own (cheap) setup
    assert time.monotonic() - t0 < 3.0
    second.result(timeout=60)
    a.close()
    b.close()


def test_a_paused_run_gives_its_slot_up_to_a_waiting_one(server, page):
    page.goto(server.url)
    status = page.locator("#status textarea")
    page.locator("#run").click()
    page.wait_for_function("el => el.value.startsWith('running')", arg=status.element_handle(), timeout=60_000)
    page.locator("#pause").click()
    page.wait_for_function("el => el.value.startsWith('paused')", arg=status.element_handle(), timeout=10_000)
    client = Client(server.url, verbose=False)
    job = client.submit(config_json(**QUICK), None, api_name="/fit")
    progress = job.result(timeout=120)[0]  # RECON_PAUSE_TIMEOUT is 3 s: the paused run steps aside
    assert progress["state"] == "done"
    page.wait_for_function("el => el.value.startsWith('stopped')", arg=status.element_handle(), timeout=10_000)
    assert "while others waited" in status.input_value() and "What was fitted is kept" in status.input_value()
    client.close()
    page.close()  # navigating away mid-stream is no error either
    time.sleep(1)
    assert "Traceback" not in server.log_path.read_text()


def test_leaving_mid_run_and_a_billion_iterations_free_the_slot_and_log_no_traceback(server, browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    page.goto(server.url)
    page.locator("#run").click()
    status = page.locator("#status textarea")
    page.wait_for_function("el => el.value.startsWith('running')", arg=status.element_handle(), timeout=60_000)
    ctx.close()  # the visitor navigates away mid-stream: their run stops and the slot comes free
    client = Client(server.url, verbose=False)
    job = client.submit(config_json(**{**LONG, "iterations": 1e9}), None, api_name="/fit")
    deadline = time.monotonic() + 60
    while not any(o[0]["state"] == "running" for o in job.outputs()):
        assert time.monotonic() < deadline, job.outputs()[-1:]
        time.sleep(0.05)
    first = job.outputs()[0][0]
    assert first["total"] <= 100_000 and "iterations" in " ".join(first["adjusted"]).lower(), first
    job.cancel()
    client.predict(config_json(**QUICK), None, api_name="/fit")  # the slot is free again
    client.close()
    time.sleep(1)
    log = server.log_path.read_text()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]


def test_estimate_and_the_page_answer_within_a_second_while_45_runs_wait(tmp_path, browser):
    srv = Server(tmp_path)
    try:
        def post() -> None:
            req = urllib.request.Request(f"{srv.url}gradio_api/call/fit", method="POST",
                                         headers={"Content-Type": "application/json"},
                                         data=json.dumps({"data": [config_json(**LONG), None]}).encode())
            urllib.request.urlopen(req, timeout=30).read()

        posters = [threading.Thread(target=post) for _ in range(45)]
        for t in posters:
            t.start()
        for t in posters:
            t.join(60)
        time.sleep(2)
        client = Client(srv.url, verbose=False)
        for _ in range(3):
            t0 = time.monotonic()
            out = client.predict(config_json(**QUICK), api_name="/estimate")
            assert out["fits"] and time.monotonic() - t0 < 1.0
        assert srv.threads() < 80  # waiting runs wait in the queue, not in a thread each
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        t0 = time.monotonic()
        page.goto(srv.url)
        estimate = page.locator("#estimate")
        page.wait_for_function("el => el.innerText.includes('Estimate')", arg=estimate.element_handle(),
                               timeout=10_000)
        assert time.monotonic() - t0 < 10  # a new visitor's page loads and works
        page.locator("#target input").click()
        page.get_by_role("option", name="teapot", exact=True).click()
        t0 = time.monotonic()
        page.wait_for_function("el => el.innerText.includes('teapot')", arg=page.locator("#target-msg").element_handle(),
                               timeout=5_000)
        assert time.monotonic() - t0 < 1.5
        ctx.close()
        client.close()
    finally:
        srv.close()
