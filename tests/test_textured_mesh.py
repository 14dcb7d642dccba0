"""Textured mesh specifics (the shared promises are in test_methods.py): the terms, snapshots, the
turntable, silhouette-only and coarse-to-fine, the tutorial recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.assets import load_builtin
from recon.methods.textured_mesh import TexturedMesh, TexturedMeshConfig

#: 32 px, 8 training views, a level-3 sphere (642 vertices), 4 faces per pixel, Adam: ~0.3-0.5 CPU
#: seconds per step on a 2-core machine, ~20-30 s for the whole fit below.
SMALL = dict(image_size=32, num_views=8, views_per_step=2, faces_per_pixel=4, sphere_level=3, optimizer="adam",
             lr=0.03, iterations=40)


@pytest.fixture(scope="module")
def fitted():
    m = TexturedMesh(load_builtin("cow"), TexturedMeshConfig(**SMALL), torch.device("cpu"))
    for _ in range(SMALL["iterations"]):
        m.step()
    return (m,)


def test_step_returns_unweighted_terms_and_total(fitted):
    m = fitted[0]
    terms = m.step()
    assert set(terms) == {"rgb", "silhouette", "edge", "normal", "laplacian", "total"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    cfg = m.cfg
    weighted = sum(getattr(cfg, f"{k}_weight") * float(v) for k, v in terms.items() if k != "total")
    assert float(terms["total"]) == pytest.approx(weighted, rel=1e-5)


def test_snapshot_images_and_mesh(fitted):
    m = fitted[0]
    s1, s2 = m.snapshot(), m.snapshot()
    assert set(s1.images) == {"target", "render", "target_silhouette", "silhouette"}
    for im in s1.images.values():
        assert im.shape == (32, 32, 3) and im.dtype == np.uint8
    assert s1.view != s2.view  # the shown training view cycles
    assert not np.array_equal(s1.images["target"], s2.images["target"])
    mesh = s1.mesh
    assert mesh.verts.shape == (642, 3) and mesh.faces.shape[1] == 3
    assert mesh.colors.shape == (642, 3) and 0 <= mesh.colors.min() and mesh.colors.max() <= 1
    assert mesh.colors.std() > 0.01  # no longer the flat grey it started as


def test_turntable(fitted):
    frames = fitted[0].turntable(frames=3, size=32)
    assert len(frames) == 3 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)


def test_silhouette_only_and_coarse_to_fine():
    cfg = TexturedMeshConfig(**{**SMALL, "image_size": 64, "iterations": 4, "silhouette_only": True,
                                "coarse_fraction": 0.5, "sphere_level": 2, "num_views": 4})
    m = TexturedMesh(load_builtin("cow"), cfg, torch.device("cpu"))
    assert m._size() == 32
    terms = m.step()
    assert "rgb" not in terms and {"silhouette", "total"} <= set(terms)
    m.step()
    assert m._size() == 64
    m.step()
    assert set(m.evaluate()) == {"iou"}
    assert m.snapshot().mesh.colors is None


def test_tutorial_preset_is_the_tutorial_recipe():
    t = TexturedMesh.presets["Tutorial"]
    assert (t["sphere_level"], t["views_per_step"], t["sigma"], t["faces_per_pixel"]) == (4, 2, 1e-4, 50)
    assert (t["rgb_weight"], t["silhouette_weight"], t["edge_weight"], t["normal_weight"],
            t["laplacian_weight"]) == (1.0, 1.0, 1.0, 0.01, 1.0)
    assert (t["optimizer"], t["lr"], t["momentum"], t["iterations"]) == ("sgd", 1.0, 0.9, 2000)
    assert (t["num_views"], t["image_size"], t["coarse_fraction"]) == (20, 128, 0.0)
