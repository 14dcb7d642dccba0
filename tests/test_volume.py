"""Voxel volume specifics (the shared promises are in test_methods.py): chunked renders, grid growth
and axes, coarse images, the exported grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon.assets import load_builtin
from recon.methods.volume import Volume, VolumeConfig
from recon.params import validate

# 8 training views at 32 px: a one-off target render of a few seconds, shared by both volumetric tests.
SMALL = dict(grid_size=32, points_per_ray=32, image_size=32, views_per_step=4, num_views=8, lr=0.1, iterations=40)


@pytest.fixture(scope="module")
def cow():
    return load_builtin("cow")


def make(cow, **over) -> Volume:
    cfg, messages = validate(VolumeConfig, {**SMALL, **over})
    assert not messages
    return Volume(cow, cfg, torch.device("cpu"))


def test_chunked_render_equals_unchunked(cow):
    m = make(cow, grid_size=16)
    with torch.no_grad():
        m.log_densities.normal_(-1.0, 2.0)  # a non-trivial volume
        m.log_colors.normal_(0.0, 2.0)
    cams = m.views.cameras("cpu", idx=[0, 3, 5])
    whole = m.render(cams, 24, chunk=3)
    parts = m.render(cams, 24, chunk=1)
    assert whole.shape == (3, 24, 24, 4)
    assert torch.allclose(whole, parts, atol=1e-6)
    assert whole[..., 3].max() > 0.1  # the comparison is not between two empty images


def test_shapes_and_axes(cow):
    m = make(cow, grid_size=16, coarse_grid=8, grow_at=0.5, iterations=4)
    terms = m.step()
    assert set(terms) == {"color", "silhouette", "total"} and m.log_densities.shape[-1] == 8
    m.step()
    m.step()
    assert m.log_densities.shape[-1] == 16  # grown to the full grid at half the run
    snap = m.snapshot()
    assert snap.view == 0 and m.snapshot().view == 1  # the snapshot cycles through the training views
    assert set(snap.images) == {"target", "render", "target_silhouette", "silhouette"}
    for im in snap.images.values():
        assert im.shape == (32, 32, 3) and im.dtype == np.uint8
    assert snap.points.xyz.shape[1] == 3 and len(snap.points.xyz) <= 20_000
    frames = m.turntable(frames=3, size=16)
    assert len(frames) == 3 and all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in frames)
    # density_grid's index [i, j, k] is (x_i, y_j, z_k): make only the +x half of the grid dense
    # (the grid's last axis is x, as in PyTorch3D's Volumes) and look for it along the first axis.
    with torch.no_grad():
        m.log_densities.fill_(-10.0)
        m.log_densities[..., 8:] = 10.0
    dens, cols, extent = m.density_grid(8)
    assert dens.shape == (8, 8, 8) and cols.shape == (8, 8, 8, 3) and extent == 3.0
    assert dens[5:].min() > 0.99 and dens[:3].max() < 0.01


def test_coarse_images_before_growth(cow):
    m = make(cow, grid_size=16, coarse_grid=8, coarse_image_size=16, grow_at=0.5, iterations=4)
    assert m.train_size() == 16  # half-size images while the grid is coarse
    images, sils = m.targets_at(16)
    assert images.shape == (8, 16, 16, 3) and sils.shape == (8, 16, 16)
    # area downsampling: the same mean colour and coverage as the full-size targets
    assert torch.allclose(images.mean(), m.images.mean(), atol=1e-4)
    assert torch.allclose(sils.mean(), m.silhouettes.mean(), atol=1e-4)
    m.step()
    m.step()
    assert m.train_size() == 32  # full-size images from the upsampling point on
    assert torch.isfinite(m.step()["total"]) and m.log_densities.shape[-1] == 16  # and the full grid
