"""Mesh deformation specifics (the shared promises are in test_methods.py): plain-data snapshots and
the Fast preset's coarse-to-fine sampling."""

from __future__ import annotations

import numpy as np
import torch

from recon.assets import load_builtin
from recon.methods.deform import Deform, DeformConfig

SMALL = dict(sphere_level=2, points=500, iterations=100)


def test_snapshot_and_result_are_plain_data():
    m = Deform(load_builtin("torus"), DeformConfig(**SMALL), torch.device("cpu"))
    m.step()
    snap = m.snapshot()
    assert isinstance(snap.mesh.verts, np.ndarray) and snap.mesh.verts.shape == (162, 3)
    assert snap.mesh.faces.shape == (320, 3) and snap.mesh.faces.dtype == np.int64
    assert m.result().mesh.verts.shape == (162, 3) and m.result().grid is None


def test_the_tutorial_preset_is_the_tutorial_recipe():
    t = Deform.presets["Tutorial"]
    assert (t["optimizer"], t["lr"], t["momentum"], t["iterations"], t["points"]) == ("sgd", 1.0, 0.9, 2000, 5000)
    assert (t["chamfer_weight"], t["edge_weight"], t["normal_weight"], t["laplacian_weight"]) == (1.0, 1.0, 0.01, 0.1)


def test_coarse_points_before_the_fine_phase():
    cfg = DeformConfig(**{**SMALL, "iterations": 10, "coarse_points": 100, "coarse_fraction": 0.5})
    m = Deform(load_builtin("cow"), cfg, torch.device("cpu"))
    seen = []
    import recon.methods.deform as deform

    original = deform.sample_points_from_meshes
    deform.sample_points_from_meshes = lambda mesh, n, **kw: (seen.append(n), original(mesh, n, **kw))[1]
    try:
        for _ in range(10):
            m.step()
    finally:
        deform.sample_points_from_meshes = original
    assert seen[:2] == [100, 100] and seen[-2:] == [500, 500]


def test_the_live_estimate_is_close_to_the_full_score():
    m = Deform(load_builtin("cow"), DeformConfig(**SMALL), torch.device("cpu"))
    for _ in range(30):
        m.step()
    live, full = m.evaluate(live=True)["chamfer_10k"], m.evaluate()["chamfer_10k"]
    assert abs(live - full) < 0.3 * full  # 2,000 points a side estimate the 10,000-point distance
