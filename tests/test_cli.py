"""The headless CLI: `list`, a tiny `fit` of every registered method, clear errors, reproducible runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recon import cli
from recon.methods import METHODS
from recon.params import knobs

ROOT = Path(__file__).resolve().parent.parent

#: Settings that shrink each method to a few seconds on a CPU; names a method lacks are left out.
TINY = dict(iterations=3, points=200, sphere_level=1, views_per_step=1, num_views=4, image_size=32,
            faces_per_pixel=4, grid_size=16, points_per_ray=8, harmonic_functions=4, hidden=16, rays_per_image=64)


def tiny_sets(method: str) -> list[str]:
    names = {k.name for k in knobs(METHODS[method][0].Config)}
    return [a for name, v in TINY.items() if name in names for a in ("--set", f"{name}={v}")]


def fit(tmp: Path, method: str = "deform", *extra: str) -> int:
    return cli.main(["fit", "--method", method, "--target", "cow", "--out", str(tmp), "--frames", "4",
                     "--size", "32", "--quiet", "--preset", "Defaults", *tiny_sets(method), *extra])


def losses(path: Path) -> dict[str, np.ndarray]:
    with open(path) as fh:
        rows = [r for r in csv.DictReader(fh) if r["total"] != ""]
    keys = [k for k in rows[0] if k not in ("iteration", "time") and all(r[k] != "" for r in rows)]
    return {k: np.array([float(r[k]) for r in rows]) for k in keys}


def test_list_prints_methods_targets_and_presets():
    out = subprocess.run([sys.executable, "-m", "recon", "list"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for name, (cls, line) in METHODS.items():
        assert f"{name}  " in out.stdout and line in out.stdout
        assert all(p in out.stdout for p in cls.presets)
    assert "cow" in out.stdout and "bumpy sphere" in out.stdout and "Presets:" in out.stdout


@pytest.mark.parametrize("method", list(METHODS))
def test_fit_writes_the_files_of_every_method(tmp_path, method, capsys):
    assert fit(tmp_path, method) == 0
    names = {p.name for p in tmp_path.iterdir()}
    stem = f"{method}_cow"
    expected = {f"{stem}.glb", f"{stem}.obj", f"{stem}_turntable.mp4", f"{stem}_turntable.gif",
                f"{stem}_timelapse.mp4", f"{stem}_history.csv", f"{stem}_config.json"}
    if method == "splats":  # splats export themselves (a splat PLY) and their centres, not a mesh
        expected = expected - {f"{stem}.glb", f"{stem}.obj"} | {f"{stem}_splats.ply", f"{stem}_points.glb"}
    if method in ("volume", "nerf"):
        expected.add(f"{stem}_density.npz")
        # 3 steps may not be enough for a surface: then the mesh files are missing and a note says why.
        if f"{stem}.glb" not in names:
            assert "No mesh extracted" in capsys.readouterr().err
            expected -= {f"{stem}.glb", f"{stem}.obj"}
    assert expected <= names, sorted(names)
    config = json.loads((tmp_path / f"{stem}_config.json").read_text())
    assert config["method"] == method and config["settings"]["iterations"] == 3 and config["state"] == "done"
    assert len(losses(tmp_path / f"{stem}_history.csv")["total"]) == 3


def test_config_file_and_overrides_layer(tmp_path, capsys):
    first = tmp_path / "a"
    assert fit(first, "deform", "--set", "chamfer_weight=2", "--seed", "5") == 0
    config = first / "deform_cow_config.json"
    # Re-running from the config reproduces it; --set and --iters override the file.
    second = tmp_path / "b"
    assert cli.main(["fit", "--config", str(config), "--out", str(second), "--quiet", "--frames", "2",
                     "--size", "32", "--set", "edge_weight=0.5", "--iters", "2"]) == 0
    settings = json.loads((second / "deform_cow_config.json").read_text())["settings"]
    assert settings["chamfer_weight"] == 2 and settings["seed"] == 5
    assert settings["edge_weight"] == 0.5 and settings["iterations"] == 2


def test_same_config_and_seed_give_the_same_losses(tmp_path):
    """Deform on CPU is deterministic given its seed: evaluation samples in a forked RNG and never disturbs
    training. Tolerance: relative 1e-6 (in practice the histories are bitwise equal on one machine)."""
    a, b, c = (tmp_path / n for n in "abc")
    args = ("--iters", "12", "--seed", "3")
    assert fit(a, "deform", *args) == 0 and fit(b, "deform", *args) == 0
    la, lb = losses(a / "deform_cow_history.csv"), losses(b / "deform_cow_history.csv")
    assert la.keys() == lb.keys() and len(la["total"]) == 12
    for k in la:
        np.testing.assert_allclose(la[k], lb[k], rtol=1e-6, atol=0, err_msg=k)
    assert fit(c, "deform", "--iters", "12", "--seed", "4") == 0
    assert not np.allclose(losses(c / "deform_cow_history.csv")["chamfer"], la["chamfer"], rtol=1e-6)


@pytest.mark.parametrize("argv, needle", [
    (["fit", "--method", "teleport"], "unknown method 'teleport'"),
    (["fit", "--target", "no_such_mesh"], "unknown target 'no_such_mesh'"),
    (["fit", "--set", "wobble=1"], "unknown setting 'wobble'"),
    (["fit", "--set", "lr"], "--set wants NAME=VALUE"),
    (["fit", "--set", "lr=fast"], "'fast' is not a number"),
    (["fit", "--set", "optimizer=lbfgs"], "not one of sgd, adam"),
    (["fit", "--preset", "Nope"], "unknown preset 'Nope'"),
    (["fit", "--iters", "0"], "--iters must be at least 1"),
    (["fit", "--iters", "many"], "invalid int value"),
    (["fit", "--config", "missing.json"], "cannot read the config file"),
    (["fit", "--device", "warp-drive"], "--device warp-drive"),
    (["fit", "--size", "33"], "--size must be a multiple of 16"),
    (["fly"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_give_a_clear_message_and_exit_2(argv, needle, capsys, tmp_path):
    assert cli.main(argv + ["--out", str(tmp_path)] if argv and argv[0] == "fit" else argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize("content, needle", [
    ("{oops", "not valid JSON"),
    ('{"method": "deform", "settings": {"wobble": 3}}', "unknown setting 'wobble'"),
    ('{"method": "nope"}', "unknown or missing method"),
])
def test_bad_config_files_are_refused(tmp_path, capsys, content, needle):
    path = tmp_path / "run.json"
    path.write_text(content)
    assert cli.main(["fit", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_unreadable_mesh_file_and_module_entry_point(tmp_path):
    bad = tmp_path / "broken.obj"
    bad.write_text("this is not a mesh\n")
    env = {**os.environ, "RECON_DEVICE": "cpu"}
    out = subprocess.run([sys.executable, "-m", "recon", "fit", "--target", str(bad), "--out", str(tmp_path / "o")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2 and "broken.obj" in out.stderr and "Traceback" not in out.stderr


def test_export_views_writes_a_dataset_that_fit_reads_back(tmp_path, capsys):
    from recon.datasets import read_dataset

    out = tmp_path / "torus_views.zip"
    assert cli.main(["export-views", "--target", "torus", "--views", "6", "--test-views", "2", "--size", "32",
                     "--out", str(out)]) == 0
    data = read_dataset(out)
    assert (len(data.train), len(data.test), data.train.images.shape[1]) == (6, 2, 32)
    assert cli.main(["fit", "--method", "volume", "--target", str(out), "--out", str(tmp_path / "fit"), "--quiet",
                     "--frames", "2", "--size", "32", "--set", "iterations=2", "--set", "grid_size=16",
                     "--set", "points_per_ray=8"]) == 0
    err = capsys.readouterr().err
    assert "training views 40 → the dataset's 6" in err  # the preset adapted to the dataset, and said so
    assert (tmp_path / "fit" / "volume_torus_views_config.json").exists()


@pytest.mark.parametrize("argv, needle", [
    (["fit", "--method", "deform", "--target", "assets/cow_views"], "image dataset: give a mesh target"),
    (["export-views", "--method", "deform", "--out", "x.zip"], "choose a method that fits images"),
    (["fit", "--target", "tests/fixtures/bad_datasets"], "no transforms_train.json or transforms.json found"),
])
def test_dataset_mistakes_exit_2(argv, needle, capsys):
    os.chdir(ROOT)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_run_over_this_machines_budget_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RECON_RUN_MEMORY_GB", "0.5")
    argv = ["fit", "--method", "volume", "--target", "cow", "--out", str(tmp_path / "v"), "--quiet",
            "--set", "grid_size=256", "--set", "image_size=256", "--set", "views_per_step=40"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "estimate about" in err and "grid size" in err.lower() and "--force" in err
    assert not (tmp_path / "v").exists()  # nothing was written
