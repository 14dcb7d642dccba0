"""The public API through gradio_client and plain HTTP: /fit streams and returns the files, /estimate
prices, refusals are error events, a cancelled job frees its slot, and the page's own handlers are
not callable from outside."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from conftest import config_json
from gradio_client import Client

QUICK = dict(iterations=30, points=300, coarse_points=300, sphere_level=2)


def test_app_imports_without_doing_work():
    import app

    assert callable(app.build_demo)  # importing app.py builds nothing and selects no device


def test_the_api_is_fit_and_estimate_only(live_app):
    _, url = live_app
    client = Client(url, verbose=False)
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/fit", "/estimate"}, list(api["named_endpoints"])
    assert not api["unnamed_endpoints"]
    fit = api["named_endpoints"]["/fit"]["parameters"]
    assert [p["parameter_name"] for p in fit] == ["config", "mesh"]
    client.close()


def test_fit_streams_json_progress_and_ends_with_the_files(live_app):
    demo, url = live_app
    client = Client(url, verbose=False)
    job = client.submit(config_json(**QUICK), None, api_name="/fit")
    outputs = list(job)
    progress = [o[0] for o in outputs]
    assert len(progress) >= 3 and progress[-1]["state"] == "done"
    assert progress[-1]["iteration"] == 30 and progress[-1]["final_metrics"]["chamfer_10k"] > 0
    its = [p["iteration"] for p in progress]
    assert its == sorted(its) and "total" in progress[-1]["losses"]
    files = outputs[-1][1]
    names = sorted(str(f).rsplit("/", 1)[-1] for f in files)
    assert any(n.endswith(".glb") for n in names) and any(n.endswith("_config.json") for n in names)
    assert any(n.endswith("_turntable.mp4") for n in names)
    # the call's own session is gone: no folder, no run left
    assert not any(w.run is not None and w.run.alive for w in demo.recon_server.sessions)
    client.close()


def test_estimate_prices_a_config_and_says_whether_it_fits(live_app):
    _, url = live_app
    client = Client(url, verbose=False)
    out = client.predict(config_json(**QUICK), api_name="/estimate")
    assert out["fits"] is True and 0 < out["memory_gb"] < 2 and out["seconds"] > 0 and "about" in out["message"]
    huge = config_json("volume", grid_size=256, image_size=256, views_per_step=40, points_per_ray=512,
                       iterations=20000)
    out = client.predict(huge, api_name="/estimate")
    assert out["fits"] is False and out["memory_gb"] > 50 and "grid size" in out["message"].lower()
    client.close()


def test_a_refusal_is_an_error_event_with_the_reason(live_app):
    _, url = live_app
    client = Client(url, verbose=False)
    huge = config_json("volume", grid_size=256, image_size=256, views_per_step=40, points_per_ray=512,
                       iterations=20000)
    with pytest.raises(Exception, match="(?i)grid size"):
        client.predict(huge, None, api_name="/fit")
    with pytest.raises(Exception, match="not valid JSON"):
        client.predict("{not json", None, api_name="/fit")
    with pytest.raises(Exception, match="nested too deeply"):
        client.predict("[" * 100_000, api_name="/estimate")
    client.close()


def test_a_cancelled_job_stops_its_run_and_frees_the_slot(live_app):
    demo, url = live_app
    client = Client(url, verbose=False)
    job = client.submit(config_json(**{**QUICK, "iterations": 20000}), None, api_name="/fit")
    deadline = time.monotonic() + 60
    while not any(o[0]["state"] == "running" and o[0]["iteration"] > 2 for o in job.outputs()):
        assert time.monotonic() < deadline, job.outputs()[-1:]
        time.sleep(0.05)
    runs = [w.run for w in demo.recon_server.sessions if w.run is not None and w.run.alive]
    assert len(runs) == 1
    t0 = time.monotonic()
    job.cancel()
    assert runs[0].wait_settled(5)
    assert time.monotonic() - t0 < 2.0 and runs[0].poll().state == "stopped"
    assert demo.recon_server.slots.active == 0
    client.close()


def _post(url: str, body: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_pages_own_handlers_are_not_callable_by_name_or_number(live_app):
    demo, url = live_app
    private = [i for i, f in demo.fns.items() if f.api_visibility == "private" and f.fn is not None]
    run_index = next(i for i, f in demo.fns.items() if f.api_name == "run_stream")
    assert run_index in private
    for name in ("run_stream", "on_stop", "on_pause", "export_core", "on_restore"):
        assert _post(f"{url}gradio_api/call/{name}", {"data": []}) == 403, name
        assert _post(f"{url}gradio_api/run/{name}", {"data": []}) == 403, name
    for index in private[:5] + [run_index]:
        body = {"data": [], "fn_index": index, "session_hash": "outsider"}
        assert _post(f"{url}gradio_api/queue/join", body) == 403, index
        assert _post(f"{url}gradio_api/run/predict", body) == 403, index
    client = Client(url, verbose=False)
    with pytest.raises(Exception):
        client.predict(fn_index=run_index)
    client.close()
