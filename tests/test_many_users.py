"""Many users on one server: isolated sessions, a queue with positions, and nothing left behind.

Every test drives the real page in-process through gradio_client (one Client = one browser session).
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from pathlib import Path

import pytest
from api_inputs import cheap_evaluate, quick, run_inputs, wait_for
from conftest import ROOT, launch
from gradio_client import Client, handle_file

import app
from recon.methods.deform import Deform

FIXTURES = ROOT / "tests" / "fixtures" / "bad_meshes"


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    """Shorter refreshes and a cheap held-out metric: the tests are about serving, not quality."""
    monkeypatch.setattr(app, "REFRESH_S", 0.1)
    monkeypatch.setattr(Deform, "evaluate", cheap_evaluate)
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.5")  # a closed client is noticed within a second


@pytest.fixture
def server(request):
    app._import_pytorch3d()  # as main() does before serving
    demo, url = launch(max_runs=request.param)
    yield demo, url
    demo.close()


def final(job, timeout: float = 90.0) -> str:
    job.result(timeout=timeout)
    return job.outputs()[-1][0]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def server_threads(client: Client) -> list[threading.Thread]:
    """Threads of this process except the test's own gradio_client ones (its pool and heartbeat)."""
    mine = set(client.executor._threads) | {client.heartbeat}
    return [t for t in threading.enumerate() if t not in mine]


def run_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("recon-run-")]


@pytest.mark.parametrize("server", [3], indirect=True)
def test_three_clients_each_see_only_their_own_run(server):
    demo, url = server
    plans = {"torus": 3, "teapot": 5, "bumpy sphere": 7}
    clients = {t: Client(url, verbose=False) for t in plans}
    # Only the torus client uploads a mesh: the others must not see it.
    up = clients["torus"].predict(handle_file(str(FIXTURES / "nonmanifold.obj")), api_name="/upload")
    assert up[2].startswith("Uploaded"), up[2]
    jobs = {t: c.submit(*run_inputs(c, "deform", t, **quick(iterations=n)), api_name="/run")
            for (t, n), c in zip(plans.items(), clients.values())}
    for target, n in plans.items():
        job = jobs[target]
        last = final(job)
        assert last.startswith(f"done · iteration {n} / {n}"), last
        statuses = [o[0] for o in job.outputs()]
        totals = {m.group(1) for s in statuses if (m := re.search(r"iteration \d+ / (\d+)", s))}
        assert totals == {str(n)}, f"{target} saw other runs' progress: {totals}"
        titles = [o[2]["plot"] for o in job.outputs() if isinstance(o[2], dict) and "plot" in o[2]]
        assert titles and all(f": {target}" in t for t in titles), target
        assert not any(f": {other}\"" in t for t in titles for other in plans if other != target)
    # the server holds one session per client, each with its own run and target
    assert len(demo.recon_sessions) >= 3
    names = sorted(s.run_target.name for s in demo.recon_sessions._by_hash.values() if s.run_target is not None)
    assert names == sorted(plans)
    # another session's upload is not visible here
    other = clients["teapot"].submit(*run_inputs(clients["teapot"], "deform", app.UPLOADED, **quick()),
                                     api_name="/run")
    assert final(other).startswith("error · Upload a mesh first"), other.outputs()[-1][0]
    mine = clients["torus"].submit(*run_inputs(clients["torus"], "deform", app.UPLOADED, **quick(iterations=2)),
                                   api_name="/run")
    assert final(mine).startswith("done · iteration 2 / 2")
    for c in clients.values():
        c.close()


@pytest.mark.parametrize("server", [1], indirect=True)
def test_cap_of_one_queues_with_positions(server):
    demo, url = server
    a, b, c = (Client(url, verbose=False) for _ in range(3))
    job_a = a.submit(*run_inputs(a, "deform", "torus", **quick(iterations=20000)), api_name="/run")
    wait_for(job_a, lambda s: s.startswith("running"))
    # b runs long enough (a few seconds) for c's stream to show it moved up to position 1
    job_b = b.submit(*run_inputs(b, "deform", "torus", **quick(iterations=300)), api_name="/run")
    wait_for(job_b, lambda s: s.startswith("waiting · position 1 in line"))
    job_c = c.submit(*run_inputs(c, "deform", "teapot", **quick(iterations=2)), api_name="/run")
    text = wait_for(job_c, lambda s: s.startswith("waiting · position 2 in line"))
    assert "1 run at a time" in text
    assert demo.recon_slots.active == 1
    time.sleep(0.5)
    assert job_b.outputs()[-1][0].startswith("waiting"), "b started while a still held the only slot"
    a.predict(api_name="/stop")  # a Stop frees the slot: b starts, c moves up
    assert final(job_a).startswith("stopped")
    wait_for(job_c, lambda s: s.startswith("waiting · position 1 in line"))
    assert final(job_b).startswith("done · iteration 300 / 300")
    assert final(job_c).startswith("done · iteration 2 / 2")
    assert demo.recon_slots.active == 0
    for cl in (a, b, c):
        cl.close()


@pytest.mark.parametrize("server", [1], indirect=True)
def test_twenty_runs_leave_no_threads_or_memory_behind(server):
    demo, url = server
    client = Client(url, verbose=False)

    def one(i: int) -> None:
        ending = ("end", "stop", "cancel")[i % 3]
        iters = 2 if ending == "end" else 20000
        job = client.submit(*run_inputs(client, "deform", "torus", **quick(iterations=iters, sphere_level=1,
                                                                          points=100)), api_name="/run")
        if ending == "end":
            assert final(job).startswith("done"), job.outputs()[-1][0]
            return
        wait_for(job, lambda s: s.startswith("running · iteration") and " 0 / " not in s)
        if ending == "stop":
            client.predict(api_name="/stop")
            assert final(job).startswith("stopped")
        else:  # what a closed tab does to the stream: the generator's finally stops the worker
            job.cancel()
            deadline = time.monotonic() + 20
            while run_threads() and time.monotonic() < deadline:
                time.sleep(0.05)

    for i in range(3):  # warm-up, one run per ending: imports, caches, gradio's and the client's thread pools
        one(i)
    gc.collect()
    threads0, rss0 = len(server_threads(client)), rss_mb()
    for i in range(20):
        one(i)
    deadline = time.monotonic() + 20
    while (run_threads() or len(server_threads(client)) > threads0) and time.monotonic() < deadline:
        time.sleep(0.1)
    gc.collect()
    assert not run_threads(), run_threads()
    assert len(server_threads(client)) <= threads0, [t.name for t in server_threads(client)]
    grown = rss_mb() - rss0
    assert grown < 200, f"resident memory grew by {grown:.0f} MB over 20 runs"
    assert demo.recon_slots.active == 0
    client.close()


@pytest.mark.parametrize("server", [2], indirect=True)
def test_session_end_removes_its_files_and_run(server):
    demo, url = server
    client = Client(url, verbose=False)
    job = client.submit(*run_inputs(client, "deform", "torus", **quick(iterations=2)), api_name="/run")
    assert final(job).startswith("done")
    (sess,) = [s for s in demo.recon_sessions._by_hash.values() if s.run is not None]
    model, files, note = client.predict(None, api_name="/export")  # what the page chains after a run
    export_dir = sess.export_dir
    assert export_dir and os.path.isdir(export_dir), "the run's downloads were not written to a session folder"
    written = [f for _, _, fs in os.walk(export_dir) for f in fs]
    assert written, note
    run = sess.run
    # a second session's folder is its own and survives the first one's end
    other = Client(url, verbose=False)
    job2 = other.submit(*run_inputs(other, "deform", "teapot", **quick(iterations=20000)), api_name="/run")
    wait_for(job2, lambda s: s.startswith("running"))
    client.close()  # the tab closes: gradio's heartbeat notices and fires demo.unload
    deadline = time.monotonic() + 15
    while os.path.exists(export_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(export_dir), "the session's temporary files outlived it"
    assert run._method is None  # its result (and memory) released
    assert job2.outputs()[-1][0].startswith("running")  # the other session is untouched
    other.close()  # and its running run stops when it goes
    deadline = time.monotonic() + 15
    while run_threads() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not run_threads()
    assert len(demo.recon_sessions) == 0
    # gradio's own copies of uploads and downloads (kept outside any session) are bounded in time
    assert demo.delete_cache and demo.delete_cache[1] <= 24 * 3600
