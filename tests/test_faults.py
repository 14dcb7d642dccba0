"""Faults a public server meets: a soak of runs with random Stops, closed sessions, live edits and
uploads, after which the server is back where it started; and the small faults found on the way,
each through the controller the page uses (recon.workbench)."""

from __future__ import annotations

import gc
import random
import tempfile
import threading
import time
from pathlib import Path

import pytest

from recon import targets
from recon import workbench as wbmod
from recon.budget import Limits, resident_bytes
from recon.methods import preset_values
from recon.server import Server
from recon.workbench import Workbench

FIXTURES = Path(__file__).parent / "fixtures" / "bad_meshes"
TINY = {  # a few seconds each on a CPU
    "deform": dict(iterations=30, points=300, coarse_points=300, sphere_level=2),
    "textured_mesh": dict(iterations=8, image_size=32, num_views=4, sphere_level=2),
    "volume": dict(iterations=6, grid_size=32, coarse_grid=16, image_size=32, coarse_image_size=32, num_views=4,
                   views_per_step=2, points_per_ray=32),
    "splats": dict(iterations=6, num_splats=300, max_splats=400, image_size=32, num_views=4, views_per_step=2),
}
GOOD_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


@pytest.fixture
def server(monkeypatch, tmp_path):
    monkeypatch.setattr(wbmod, "REFRESH_S", 0.05)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # session folders land here, to be counted
    return Server(max_runs=2, device="cpu", limits=Limits())


def session_folders(tmp: Path) -> list[Path]:
    return list(tmp.glob("recon-session-*"))


def settle(server: Server, timeout: float = 60.0) -> None:
    """Close every session and wait for their workers (and anything they started) to end."""
    server.shutdown(timeout)
    end = time.monotonic() + timeout
    while any(t.name.startswith("recon-run-") for t in threading.enumerate()) and time.monotonic() < end:
        time.sleep(0.1)
    gc.collect()


def play(wb: Workbench, rng: random.Random, uploads: list[Path]) -> None:
    """One visitor's turn: maybe an upload, a run, then a random ending."""
    target = "cow"
    if rng.random() < 0.4:
        choice, _, message = wb.upload(str(rng.choice(uploads)))
        assert choice or message.startswith("⚠️"), message  # a refusal says why
        target = choice or target
    method = rng.choice(list(TINY))
    update = wb.start(method, target if method != "deform" or target != "uploaded dataset" else "cow",
                      {**preset_values(method), **TINY[method]})
    assert update.status.split(" ·")[0] in ("queued", "setup", "running", "error", "refused"), update.status
    time.sleep(rng.uniform(0.0, 1.5))
    wb.tick(wait=False)
    action = rng.choice(["stop", "close", "edit", "pause", "finish"])
    if action == "edit":
        wb.live_edit(method, rng.choice(["lr", "iterations", "color_weight", "rgb_weight"]),
                     rng.choice([None, "", "abc", 1e9, -1, 0.001]))  # junk included: never a crash
        action = "finish"
    if action == "pause":
        wb.pause()
        time.sleep(rng.uniform(0.0, 0.5))
        action = "stop"
    if action == "stop":
        wb.stop()
    if action in ("stop", "finish"):
        for _ in wb.follow():
            pass
        if rng.random() < 0.5:
            wb.export()
    if action == "close" or rng.random() < 0.5:
        wb.close()


def test_a_soak_of_random_faults_leaves_the_server_where_it_started(server, tmp_path):
    uploads = [FIXTURES / name for name in ("empty.obj", "nan_coords.obj", "truncated.glb", "pickle_renamed.ply",
                                            "nonmanifold.obj", "stray_vertex.obj")]
    good = tmp_path / "tetra.obj"
    good.write_text(GOOD_OBJ)
    uploads.append(good)
    # warm up (imports, compiled kernels, caches), then take the baseline
    play(Workbench(server), random.Random(-1), [good])
    settle(server)
    base_threads = threading.active_count()
    base_memory = resident_bytes()
    assert not session_folders(tmp_path)

    rng = random.Random(17)
    sessions = [Workbench(server)]
    for _ in range(20):
        if rng.random() < 0.3 or sessions[-1]._closed:
            sessions.append(Workbench(server))
        play(sessions[-1], rng, uploads)
    settle(server)

    assert threading.active_count() <= base_threads, [t.name for t in threading.enumerate()]
    assert not session_folders(tmp_path)
    assert not list(server.sessions)
    grown = (resident_bytes() - base_memory) / 1e6
    assert grown < 200, f"memory grew {grown:.0f} MB over 20 runs"


# --- the small faults -----------------------------------------------------------------------------------


def test_overlay_numbers_that_are_not_runs_are_ignored(server):
    wb = Workbench(server)
    for junk in (["#"], ["#", ""], [None], ["#abc"], ["# 3 (deform)"], [""], None):
        wb.set_overlays(junk)  # raised IndexError on "#"
        assert wb.overlays == []


def test_a_cleared_learning_rate_box_keeps_the_value_and_the_run_goes_on(server):
    wb = Workbench(server)
    wb.start("deform", "cow", {**preset_values("deform"), **TINY["deform"], "iterations": 200})
    for cleared in (None, ""):
        _, messages = wb.live_edit("deform", "lr", cleared)
        assert messages and all("lr" in m or "learning" in m.lower() or "empty" in m for m in messages), messages
    assert wb.run.cfg.lr == preset_values("deform")["lr"]
    wb.stop()
    *_, last = wb.follow()
    assert last.status.startswith("stopped"), last.status


def test_a_billion_iterations_are_clamped_and_said_so(server, capsys):
    wb = Workbench(server)
    update = wb.start("deform", "cow", {**preset_values("deform"), **TINY["deform"], "iterations": 1e9})
    assert "iterations" in " ".join(wb.adjusted).lower() and "adjusted" in update.status, update.status
    assert wb.run.total <= 100_000
    wb.close()
    assert "Traceback" not in capsys.readouterr().err


def test_the_points_cache_is_bounded():
    assert targets._points_cache.size <= 32
    from recon.assets import load_builtin

    cow = load_builtin("cow")
    for n in range(100, 100 + 3 * targets._points_cache.size):
        targets.target_points(cow, n)
    assert len(targets._points_cache) <= targets._points_cache.size
