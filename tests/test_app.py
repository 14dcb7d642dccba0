"""The page's API through gradio_client: a run streams updates and finishes; Stop stops it."""

from __future__ import annotations

import json
import re
import time

from conftest import run_args
from gradio_client import Client

TINY = dict(sphere_level=2, points=500, iterations=40)


def iteration(status: str) -> int:
    m = re.search(r"iteration (\d+) /", status)
    return int(m.group(1)) if m else -1


def test_app_imports_without_doing_work():
    import app

    assert callable(app.build_demo)  # importing app.py builds nothing and selects no device


def test_run_streams_several_updates_and_finishes(live_app):
    _, url = live_app
    client = Client(url, verbose=False)
    job = client.submit(*run_args("deform", "cow", **TINY), api_name="/run")
    outs = list(job)
    statuses = [o[0] for o in outs]
    assert len(outs) >= 3, statuses
    assert statuses[-1].startswith("done · iteration 40 / 40"), statuses[-1]
    assert "Chamfer (10k points)" in statuses[-1]
    its = [iteration(s) for s in statuses]
    assert its == sorted(its) and its[0] < its[-1]
    loss_figs = [o[1] for o in outs if isinstance(o[1], dict) and "plot" in o[1]]
    last = json.loads(loss_figs[-1]["plot"])
    names = {t["name"] for t in last["data"]}
    assert {"chamfer", "edge", "normal", "laplacian", "total"} <= names
    assert last["layout"]["yaxis"]["type"] == "log"
    scenes = [json.loads(o[2]["plot"]) for o in outs if isinstance(o[2], dict) and "plot" in o[2]]
    assert scenes and any(t["type"] == "mesh3d" for t in scenes[-1]["data"])
    assert all(s["layout"]["uirevision"] == "keep" for s in scenes)  # keeps the user's camera


def test_stop_ends_the_run_within_two_seconds(live_app):
    demo, url = live_app
    client = Client(url, verbose=False)
    job = client.submit(*run_args("deform", "cow", sphere_level=2, points=500, iterations=20000), api_name="/run")
    for out in job:
        if iteration(out[0]) >= 3:
            break
    sessions = demo.recon_sessions
    runs = [s.run for s in sessions._by_hash.values() if s.run is not None and not s.run.finished]
    assert len(runs) == 1, [(s.run.state if s.run else None) for s in sessions._by_hash.values()]
    t0 = time.monotonic()
    job.cancel()  # a closed tab or a cancelled job ends the worker through the generator's finally
    assert runs[0].join(2), "worker still running 2 s after cancel"
    assert time.monotonic() - t0 < 2.5 and runs[0].state == "stopped"


def test_unknown_upload_target_gives_a_message(live_app):
    _, url = live_app
    client = Client(url, verbose=False)
    outs = list(client.submit(*run_args("deform", "uploaded mesh", **TINY), api_name="/run"))
    assert "Upload a mesh first" in outs[-1][0]
