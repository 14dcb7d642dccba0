"""The tuning workbench: live edits through the API, the session's run history, overlays and restore."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from api_inputs import cheap_evaluate, quick, run_inputs, wait_for
from gradio_client import Client

import app
from recon.history import HEADERS, RunHistory, key_names, mesh_thumbnail, record_run, thumbnail
from recon.methods import METHODS
from recon.methods.base import MeshData, Snapshot
from recon.methods.deform import Deform, DeformConfig
from recon.params import knobs
from recon.session import SessionState, grouped

WEIGHTS = dict(chamfer=1.0, edge=1.0, normal=0.01, laplacian=0.1)  # DeformConfig's defaults


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(app, "REFRESH_S", 0.1)
    monkeypatch.setattr(Deform, "evaluate", cheap_evaluate)


def session_of(demo, client):
    """The server-side session of a gradio_client Client (one Client = one browser session)."""
    return demo.recon_sessions._by_hash[client.session_hash]


def iteration(status: str) -> int:
    import re

    m = re.search(r"iteration (\d+) /", status)
    return int(m.group(1)) if m else -1


def value(out):
    """A component's value from an API output (gradio_client hands back update dicts as they are)."""
    return out.get("value") if isinstance(out, dict) and out.get("__type__") == "update" else out


def restored(out) -> dict:
    names = [k.name for k in grouped(knobs(DeformConfig))]
    return dict(zip(names, map(value, out[2:2 + len(names)])))


def total_of(row: dict, weights: dict) -> float:
    return sum(w * row[k] for k, w in weights.items())


# --- (a) live edits through the API --------------------------------------------------------------


def test_live_edit_changes_the_loss_from_the_next_step_and_reaches_the_export(live_app):
    demo, url = live_app
    client = Client(url, verbose=False)
    job = client.submit(*run_inputs(client, "deform", "cow", **quick(iterations=20000)), api_name="/run")
    wait_for(job, lambda s: iteration(s) >= 3)
    sess = session_of(demo, client)
    run = sess.run
    assert "cannot change" in client.predict("deform", "iterations", 5, api_name="/live_edit")
    assert "running method is deform" in client.predict("nerf", "lr", 0.01, api_name="/live_edit")
    assert client.predict("deform", "chamfer_weight", 3.0, api_name="/live_edit") == "applied"
    deadline = time.monotonic() + 30
    while not (run.events and run.iteration > run.events[0]["iteration"] + 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "outside" in client.predict("deform", "edge_weight", 99.0, api_name="/live_edit")  # clamped to 10
    wait_for(job, lambda s: "live edits: Chamfer weight → 3" in s, timeout=30)
    client.predict(api_name="/stop")
    job.result(timeout=30)
    assert run.state == "stopped" and not run.alive

    ev = run.events[0]
    assert ev["name"] == "chamfer_weight" and ev["value"] == 3.0 and ev["iteration"] >= 3
    assert [e["name"] for e in run.events] == ["chamfer_weight", "edge_weight"]
    edge_at = run.events[1]["iteration"]
    rows = {r["iteration"]: r for r in run.history}
    at = ev["iteration"]
    for i in range(1, at + 1):  # up to the edit: the start weights
        assert rows[i]["total"] == pytest.approx(total_of(rows[i], WEIGHTS), rel=1e-5)
    for i in range(at + 1, edge_at + 1):  # from the next step on: the new chamfer weight
        assert rows[i]["total"] == pytest.approx(total_of(rows[i], {**WEIGHTS, "chamfer": 3.0}), rel=1e-5)
    assert run.cfg.chamfer_weight == 3.0 and run.cfg.edge_weight == 10.0 and run.initial_cfg.chamfer_weight == 1.0

    # the session's history has it, edits included
    assert len(sess.history) == 1
    rec = sess.history.records[0]
    assert rec.events == run.events and rec.settings["chamfer_weight"] == 3.0 and rec.state == "stopped"
    assert "chamfer 1→3" in rec.key_settings()

    # the exported config carries the final values and the edits with their iterations
    _, files, _ = client.predict(None, api_name="/export")
    (cfg_path,) = [f for f in files if str(f).endswith("_config.json")]
    data = json.loads(open(cfg_path).read())
    assert data["settings"]["chamfer_weight"] == 3.0 and data["start_settings"]["chamfer_weight"] == 1.0
    assert data["live_edits"][0] == {"iteration": at, "name": "chamfer_weight", "value": 3.0}
    assert data["live_edits"][1]["name"] == "edge_weight" and data["live_edits"][1]["value"] == 10.0
    client.close()


# --- (b) history, overlays, restore through the API ----------------------------------------------


def test_history_survives_several_runs_overlays_render_and_restore_sets_the_sliders(live_app):
    demo, url = live_app
    client = Client(url, verbose=False)
    plans = [dict(iterations=3, chamfer_weight=2.0), dict(iterations=5, laplacian_weight=0.5),
             dict(iterations=4, optimizer="adam", lr=0.01)]
    for plan in plans:
        out = client.predict(*run_inputs(client, "deform", "torus", **quick(**plan)), api_name="/run")
        assert out[0].startswith("done"), out[0]
    sess = session_of(demo, client)
    hist = sess.history
    assert [r.number for r in hist] == [1, 2, 3] and [r.iterations for r in hist] == [3, 5, 4]
    rows = hist.rows()
    assert [r[0] for r in rows] == [3, 2, 1] and all(len(r) == len(HEADERS) for r in rows)
    assert rows[2][1:3] == ["deform", "torus"] and "chamfer 2" in rows[2][3] and rows[2][6].startswith("Chamfer")
    assert all(r.thumbnail is not None and r.thumbnail.dtype == np.uint8 for r in hist)

    # overlays: the chosen past runs' totals, dashed, next to the current run's terms
    fig = json.loads(client.predict(["1", "2"], api_name="/overlay")["plot"])
    names = [t["name"] for t in fig["data"]]
    assert "#1 total" in names and "#2 total" in names and "#3 total" not in names and "chamfer" in names
    dashed = [t for t in fig["data"] if t["name"] == "#1 total"][0]
    assert dashed["line"]["dash"] == "dash" and len(dashed["x"]) == 3
    assert sess.overlays == ["1", "2"]
    # the next run's streamed loss chart keeps the overlays
    job = client.submit(*run_inputs(client, "deform", "torus", **quick(iterations=2)), api_name="/run")
    outs = list(job)
    streamed = json.loads([o[1] for o in outs if isinstance(o[1], dict)][-1]["plot"])
    assert {"#1 total", "#2 total"} <= {t["name"] for t in streamed["data"]}
    assert len(sess.history) == 4

    # restore run 1 into the sliders (the page is on another method: it switches back)
    out = client.predict("1", "volume", api_name="/restore")
    assert value(out[0]) == "deform" and value(out[1]) == "torus" and "Restored run **#1**" in out[-1]
    values = restored(out)
    assert values["iterations"] == 3 and values["chamfer_weight"] == 2.0 and values["points"] == 500
    assert sess.pending_config == ("deform", hist.get(1).settings)  # applied after the method switch
    out = client.predict("2", "deform", api_name="/restore")
    values = restored(out)
    assert values["iterations"] == 5 and values["laplacian_weight"] == 0.5 and values["chamfer_weight"] == 1.0
    assert "Pick a run" in client.predict("99", "deform", api_name="/restore")[-1]
    client.close()


# --- (c) recon.history and recon.session without a server ----------------------------------------


def fake_run(ticket: int, n: int = 10, metric: float = 0.5, events=(), state: str = "done"):
    cfg = DeformConfig(chamfer_weight=2.0)
    history = [{"iteration": i + 1, "time": 0.1 * i, "chamfer": 1.0 / (i + 1), "total": 2.0 / (i + 1)} for i in range(n)]
    mesh = MeshData(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32),
                    np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]], np.int64))
    return SimpleNamespace(cfg=cfg, initial_cfg=DeformConfig(), events=list(events), history=history,
                           metric_history=[{"iteration": n, "time": 1.0, "chamfer_10k": metric}], iteration=n, total=n,
                           state=state, ticket=ticket, method_cls=Deform, alive=False, finished=True,
                           asset=SimpleNamespace(name="cow", key="builtin:cow"),
                           latest_snapshot=lambda: (1, Snapshot(iteration=n, mesh=mesh)))


def test_run_record_summarises_a_run():
    rec = record_run(fake_run(1, events=[{"iteration": 4, "name": "chamfer_weight", "value": 2.0}]), 1, "cow")
    assert rec.final_loss == pytest.approx(0.2) and rec.final_quality == ("chamfer_10k", 0.5)
    assert rec.key_names == key_names(DeformConfig) == ("chamfer_weight", "edge_weight", "normal_weight",
                                                        "laplacian_weight", "lr")
    row = rec.row()
    assert row[:3] == [1, "deform", "cow"] and row[3].startswith("chamfer 1→2, edge 1")
    assert row[4:] == ["10 / 10", "0.2", "Chamfer 0.5", "done"]
    assert rec.thumbnail.shape == (96, 96, 3) and (rec.thumbnail != 255).any()


def test_run_history_caps_dedupes_and_overlays():
    hist = RunHistory(cap=3)
    for t in range(1, 6):
        assert hist.add(record_run(fake_run(t, n=t), hist.next_number(), "cow"), key=t)
    assert not hist.add(record_run(fake_run(5), hist.next_number(), "cow"), key=5)  # recorded once
    assert [r.number for r in hist] == [3, 4, 5] and hist.next_number() == 6
    assert hist.get(1) is None and hist.get("#4").iterations == 4
    assert [c[1] for c in hist.choices()] == ["5", "4", "3"] and hist.choices()[0][0] == "#5 deform · cow"
    assert [lbl for lbl, _ in hist.overlays(["5", 3, "1"])] == ["#3", "#5"]  # oldest first; #1 is gone


def test_long_histories_are_thinned_and_thumbnails_cover_images_and_meshes():
    rec = record_run(fake_run(1, n=5000), 1, "cow")
    assert len(rec.history) <= 2000 and rec.history[0]["iteration"] == 1 and rec.history[-1]["iteration"] == 5000
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    assert thumbnail(Snapshot(iteration=1, images={"render": img})).shape == (96, 96, 3)
    assert thumbnail(None) is None and thumbnail(Snapshot(iteration=1)) is None
    from pytorch3d.utils import ico_sphere

    s = ico_sphere(2)
    pic = mesh_thumbnail(s.verts_packed().numpy(), s.faces_packed().numpy(), size=64)
    assert pic.shape == (64, 64, 3) and 0.3 < (pic != 255).any(axis=2).mean() < 0.95  # a disc of a sphere


def test_session_refuses_live_edits_without_a_matching_run():
    sess = SessionState()
    assert sess.live_edit("deform", "lr", 0.1) == (False, ["no run is going: the value applies to the next run"])
    assert not sess.record()  # nothing to record


def test_every_method_has_a_quick_preset_and_a_failure_preset_and_live_knobs():
    for name, (cls, _) in METHODS.items():
        names = list(cls.presets)
        assert "Tutorial" in names and ({"Quick", "Fast"} & set(names)), (name, names)
        assert len(names) >= 3, (name, names)  # a failure mode too
        assert any(k.live for k in knobs(cls.Config))
        for k in knobs(cls.Config):
            assert len(k.help) > 20, (name, k.name)
        assert "optimised" in cls.explain and "Loss terms" in cls.explain and cls.tutorial
