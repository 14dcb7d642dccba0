"""The page's controller without a server: a session starts, watches, edits, stops, restores and
exports runs through plain Python calls, as the page's handlers do."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from recon import workbench as wbmod
from recon.budget import Limits
from recon.history import HEADERS
from recon.methods import preset_values
from recon.server import Server
from recon.workbench import Loaded, Workbench

QUICK = dict(iterations=40, points=300, coarse_points=300, sphere_level=2)  # deform, seconds on a CPU


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(wbmod, "REFRESH_S", 0.05)
    return Server(max_runs=2, device="cpu", limits=Limits())


def deform_values(**over):
    return {**preset_values("deform"), **QUICK, **over}


def follow(wb: Workbench, timeout: float = 120.0):
    updates, end = [], time.monotonic() + timeout
    for u in wb.follow():
        updates.append(u)
        assert time.monotonic() < end, [x.status for x in updates[-3:]]
    return updates


def test_a_run_streams_updates_and_is_scored_recorded_and_exported(server):
    wb = Workbench(server)
    first = wb.start("deform", "cow", deform_values())
    assert first.running and first.status.splitlines()[0].split(" · ")[0] in ("queued", "setup", "running")
    updates = follow(wb)
    last = updates[-1]
    assert last.done and last.status.startswith("done · iteration 40 / 40") and not last.running
    assert "Chamfer (10k points)" in last.status  # the full score, once the run was scored
    losses = {t["name"] for t in last.loss["data"]}
    assert {"chamfer", "edge", "normal", "laplacian", "total"} <= losses
    metrics = {t["name"]: t for t in last.metrics["data"]}
    live = "Chamfer (live estimate: 2,000 points a side)"  # the chart says what the estimate measures
    assert live in metrics and "Chamfer (full score)" in metrics
    assert len(metrics[live]["x"]) >= 2 and metrics["Chamfer (full score)"]["x"] == [40]
    assert any(u.scene is not None for u in updates)  # the 3D view moved
    # the history has it
    assert len(wb.history) == 1 and wb.history.rows()[0][1:3] == ["deform", "cow"]
    assert len(wb.history.rows()[0]) == len(HEADERS)
    # core files first, then the videos
    files, notes = wb.export()
    assert {"glb", "obj", "history_csv", "config_json"} <= set(files) and not notes
    rows = list(csv.DictReader(open(files["history_csv"])))
    assert "live_chamfer_10k" in rows[0] and "chamfer_10k" in rows[0]  # live estimate and full score apart
    assert rows[-1]["chamfer_10k"] and float(rows[-1]["chamfer_10k"]) > 0
    config = json.loads(Path(files["config_json"]).read_text())
    assert config["method"] == "deform" and config["settings"]["iterations"] == 40 and config["final_score"]
    extras, _ = wb.export(extras=True)
    assert {"turntable_mp4", "turntable_gif", "timelapse_mp4"} <= set(extras)
    folder = wb.downloads.folder()
    wb.close()
    assert not folder.exists()


def test_pause_and_stop_answer_at_once_and_live_edits_apply(server):
    wb = Workbench(server)
    wb.start("deform", "cow", deform_values(iterations=20000))
    while "running" not in wb.tick().status:
        pass
    applied, msgs = wb.live_edit("deform", "chamfer_weight", 3.0)
    assert applied and not msgs
    assert wb.live_edit("deform", "iterations", 5) == (False, ["Iterations cannot change while a run is going"])
    assert wb.live_edit("nerf", "lr", 0.1)[1] == ["the running method is deform, not nerf: nothing changed"]
    while not wb.run.poll().events:  # it applies from the next step
        time.sleep(0.01)
    label, status = wb.pause()
    assert label == "Resume" and status.split(" · ")[0] in ("pausing", "paused")
    label, status = wb.pause()
    assert label == "Pause"
    t0 = time.monotonic()
    status = wb.stop()
    assert time.monotonic() - t0 < 0.5 and status.startswith("stopping")
    last = follow(wb)[-1]
    assert last.status.startswith("stopped") and "live edits: Chamfer weight → 3" in last.status
    rec = wb.history.records[-1]
    assert rec.settings["chamfer_weight"] == 3.0 and "chamfer 1→3" in rec.key_settings()
    wb.close()


def test_restore_and_load_config_return_the_method_and_every_value(server, tmp_path):
    wb = Workbench(server)
    wb.start("deform", "torus", deform_values(iterations=3, chamfer_weight=2.0))
    follow(wb)
    out = wb.restore("1")
    assert isinstance(out, Loaded) and out.method == "deform" and out.target == "torus"
    assert out.values["chamfer_weight"] == 2.0 and out.values["iterations"] == 3
    assert set(out.values) == set(preset_values("deform"))
    assert wb.restore("99") == "⚠️ Pick a run from the history to restore."
    files, _ = wb.export()
    loaded = wb.load_config(str(files["config_json"]))
    assert isinstance(loaded, Loaded) and loaded.values["chamfer_weight"] == 2.0 and loaded.target == "torus"
    bad = tmp_path / "bad.json"
    bad.write_text("[" * 100_000)  # nested too deep for json
    assert "nested too deeply" in wb.load_config(str(bad))
    bad.write_text('{"method": "deform", "settings": {"lr": "abc"}}')
    loaded = wb.load_config(str(bad))
    assert isinstance(loaded, Loaded) and "not a valid value" in loaded.message
    wb.close()


def test_a_run_over_the_servers_limits_is_refused_before_any_work(server):
    small = Server(max_runs=1, device="cpu", limits=Limits(memory_bytes=2 * 2**30, seconds=600))
    wb = Workbench(small)
    maxima = {**preset_values("volume"), "grid_size": 256, "image_size": 256, "views_per_step": 40,
              "points_per_ray": 512, "iterations": 20000}
    estimate = wb.estimate("volume", "cow", maxima)
    assert estimate.startswith("⚠️") and "grid size" in estimate.lower()
    update = wb.start("volume", "cow", maxima)
    assert update.done and update.status.startswith("refused") and wb.run is None
    assert wb.estimate("deform", "cow", deform_values()).startswith("Estimate: about")
    wb.close()


def test_bad_targets_get_a_message_and_no_run(server):
    wb = Workbench(server)
    update = wb.start("deform", "uploaded mesh", deform_values())
    assert update.done and "Upload a mesh first" in update.status
    update = wb.start("deform", "cow views (dataset)", deform_values())
    assert update.done and "image dataset" in update.status and "mesh target" in update.status
    scene, msg = wb.preview("cow views (dataset)")
    assert scene is not None and "40 training and 8 held-out views" in msg
    assert wb.upload(None) == (None, None, "")
    wb.close()


def test_sessions_are_apart_and_end(server):
    a, b = Workbench(server), Workbench(server)
    a.start("deform", "torus", deform_values(iterations=20000))
    b.start("deform", "teapot", deform_values(iterations=5))
    follow(b)
    assert a.run.poll().state in ("setup", "running") and b.run.poll().state == "done"
    assert a.run is not b.run and b.history.rows()[0][2] == "teapot" and len(a.history) == 0
    run = a.run
    a.close()
    assert run.wait_settled(10) and run.poll().state == "stopped" and run._method is None
    assert a not in server.sessions and b in server.sessions
    b.close()


def test_the_target_views_download_as_a_dataset(server):
    from recon.datasets import read_dataset

    wb = Workbench(server)
    values = {**preset_values("volume"), "num_views": 6, "image_size": 32}
    path, msg = wb.export_views("volume", "torus", values)
    assert path is not None and path.suffix == ".zip" and "NeRF-synthetic" in msg
    data = read_dataset(path)
    assert len(data.train) == 6 and len(data.test) == 5 and data.train.images.shape[1] == 32
    assert np.allclose(data.train.fov_deg, 60.0)
    wb.close()
    assert not os.path.exists(path)
