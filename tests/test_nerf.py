"""NeRF specifics (the shared promises are in test_methods.py): chunked renders, the recipe, shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from recon.assets import load_builtin
from recon.methods.nerf import Nerf, NerfConfig
from recon.params import knobs, validate

# Same target settings as tests/test_volume.py (8 views at 32 px), so one render serves both files.
SMALL = dict(harmonic_functions=6, hidden=32, rays_per_image=128, points_per_ray=32, views_per_step=4,
             image_size=32, num_views=8, lr=5e-3, iterations=120)


@pytest.fixture(scope="module")
def cow():
    return load_builtin("cow")


def make(cow, **over) -> Nerf:
    cfg, messages = validate(NerfConfig, {**SMALL, **over})
    assert not messages
    return Nerf(cow, cfg, torch.device("cpu"))


def test_chunked_render_equals_unchunked(cow):
    m = make(cow, hidden=16)
    with torch.no_grad():
        m.net.density_head[0].bias.fill_(0.5)  # visible density, so the images are not empty
    cams = m.views.cameras("cpu", idx=[0, 5])
    whole = m.render(cams, 20, chunk=None)
    parts = m.render(cams, 20, chunk=1000)  # not a multiple of the points per ray: uneven chunks
    assert whole.shape == (2, 20, 20, 4)
    assert torch.allclose(whole, parts, atol=1e-5)
    assert whole[..., 3].max() > 0.1


def test_presets_name_real_fields_within_bounds():
    by_name = {k.name: k for k in knobs(NerfConfig)}
    assert {"Tutorial", "Quick"} <= set(Nerf.presets)
    for preset in Nerf.presets.values():
        for name, value in preset.items():
            assert by_name[name].clamp(value) == (value, None), (name, value)
    tut = dataclasses.replace(NerfConfig(), **Nerf.presets["Tutorial"])
    assert (tut.harmonic_functions, tut.hidden, tut.rays_per_image, tut.points_per_ray) == (60, 256, 750, 128)
    assert (tut.views_per_step, tut.lr, tut.iterations, tut.num_views) == (6, 1e-3, 3000, 40)
    assert Nerf.device_presets == {"cpu": "Quick", "cuda": "Tutorial"}


def test_network_matches_the_recipe():
    from recon.methods.nerf import RadianceField

    net = RadianceField(60, 256)
    assert net.mlp[0].in_features == 360  # sin and cos of 60 frequencies for x, y, z
    assert net.color_head[0].in_features == 256 + 360  # features + embedded ray direction
    assert net.density_head[0].bias.item() == -1.5


def test_shapes(cow):
    m = make(cow, iterations=2)
    terms = m.step()
    assert set(terms) == {"color", "silhouette", "total"}
    snap = m.snapshot()
    assert set(snap.images) == {"target", "render", "target_silhouette", "silhouette"}
    for im in snap.images.values():
        assert im.shape == (32, 32, 3) and im.dtype == np.uint8
    assert snap.points.xyz.shape[1] == 3 and len(snap.points.xyz) <= 20_000
    frames = m.turntable(frames=2, size=16)
    assert len(frames) == 2 and all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in frames)
    dens, cols, extent = m.density_grid(8)
    assert dens.shape == (8, 8, 8) and cols.shape == (8, 8, 8, 3) and extent > 2.0
    assert 0.0 <= dens.min() and dens.max() <= 1.0
