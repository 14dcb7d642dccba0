"""Target renders: shapes, ranges, held-out cameras, the render cache, and the tiled CPU rasteriser."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import recon.targets as targets
from recon.assets import load_builtin
from recon.metrics import psnr, silhouette_iou
from recon.targets import EVAL_SIZE, ViewSettings
from recon.targets import views_for as render_views

#: Small but not degenerate: 6 training views at 32 px + 2 held-out views at 128 px render in about a second.
SMALL = ViewSettings(num_views=6, image_size=32, heldout_views=2)


@pytest.fixture(scope="module")
def cow_views():
    return render_views(load_builtin("cow"), SMALL, "cpu")


def test_shapes_and_ranges(cow_views):
    v = cow_views
    assert v.images.shape == (6, 32, 32, 3) and v.silhouettes.shape == (6, 32, 32)
    # held-out views are always at the fixed evaluation size, whatever the training size
    assert v.heldout_images.shape == (2, EVAL_SIZE, EVAL_SIZE, 3)
    assert v.heldout_silhouettes.shape == (2, EVAL_SIZE, EVAL_SIZE)
    assert v.R.shape == (6, 3, 3) and v.T.shape == (6, 3) and v.heldout_R.shape == (2, 3, 3)
    for x in (v.images, v.silhouettes, v.heldout_images, v.heldout_silhouettes):
        assert x.dtype == torch.float32 and torch.isfinite(x).all()
        assert x.min() >= 0 and x.max() <= 1
    # Every view sees the cow: a silhouette covering a real share of the image, and not all of it.
    cover = (v.silhouettes > 0.5).float().mean((1, 2))
    assert (cover > 0.05).all() and (cover < 0.9).all()
    assert ((v.heldout_silhouettes > 0.5).float().mean((1, 2)) > 0.05).all()
    # The white background shows where the silhouette is empty; the cow's texture where it is full.
    outside = v.silhouettes < 0.01
    assert v.images[outside].min() > 0.99
    assert v.images[v.silhouettes > 0.99].mean() < 0.9


def test_heldout_cameras_differ_from_training(cow_views):
    v = cow_views
    centres = v.cameras("cpu").get_camera_center()  # (6, 3)
    held = v.cameras("cpu", heldout=True).get_camera_center()  # (2, 3)
    gap = torch.cdist(held, centres).min(dim=1).values
    assert (gap > 0.1).all(), gap  # camera distance 2.7: 0.1 is about 2 degrees
    # and so do their images
    small = torch.nn.functional.avg_pool2d(v.heldout_images[0:1].permute(0, 3, 1, 2), EVAL_SIZE // 32)
    assert psnr(small.permute(0, 2, 3, 1), v.images[0:1]) < 30


def test_cache_hit_on_second_call(cow_views):
    before = targets.render_count
    again = render_views(load_builtin("cow"), SMALL, "cpu")
    assert again is cow_views
    assert targets.render_count == before
    other = render_views(load_builtin("cow"), ViewSettings(num_views=2, image_size=16, heldout_views=1), "cpu")
    assert targets.render_count == before + 1 and other.images.shape == (2, 16, 16, 3)


def test_untextured_target_has_colour():
    v = render_views(load_builtin("torus"), ViewSettings(num_views=2, image_size=32, heldout_views=1), "cpu")
    inside = v.images[v.silhouettes > 0.99]  # (P, 3)
    assert inside.shape[0] > 20
    assert inside.std(0).max() > 0.03  # the colour ramp varies over the surface


def test_metrics():
    a = torch.rand(2, 8, 8, 3)
    assert psnr(a, a) > 90
    assert math.isclose(psnr(torch.zeros(1, 4, 4, 3), torch.full((1, 4, 4, 3), 0.1)), 20.0, rel_tol=1e-4)
    s = torch.zeros(1, 8, 8)
    s[:, :4] = 1
    assert silhouette_iou(s, s) == 1.0
    t = torch.zeros(1, 8, 8)
    t[:, :, :4] = 1
    assert math.isclose(silhouette_iou(s, t), 16 / 48)


@pytest.mark.parametrize("blur_sigma,k", [(0.0, 1), (1e-4, 20)])
def test_tiled_rasteriser_matches_pytorch3d(blur_sigma, k):
    """The tiled CPU rasteriser returns PyTorch3D's own fragments, and passes gradients the same way."""
    from pytorch3d.renderer import (
        FoVPerspectiveCameras,
        MeshRasterizer,
        RasterizationSettings,
        SoftSilhouetteShader,
        look_at_view_transform,
    )

    from recon.render import TiledMeshRasterizer

    mesh = load_builtin("cow").meshes("cpu")
    R, T = look_at_view_transform(dist=2.7, elev=torch.tensor([20.0, 200.0]), azim=torch.tensor([30.0, -100.0]))
    cams = FoVPerspectiveCameras(R=R, T=T)
    blur = math.log(1 / 1e-4 - 1) * blur_sigma
    rs = RasterizationSettings(image_size=48, blur_radius=blur, faces_per_pixel=k)
    verts = mesh.verts_packed().clone().requires_grad_(True)
    meshes = mesh.update_padded(verts[None]).extend(2)
    ref = MeshRasterizer(cameras=cams, raster_settings=rs)(meshes)
    out = TiledMeshRasterizer(cameras=cams, raster_settings=rs, tile=16)(meshes)
    assert out.pix_to_face.shape == ref.pix_to_face.shape == (2, 48, 48, k)
    # identical up to the order of faces at exactly equal depth
    assert (out.pix_to_face == ref.pix_to_face).float().mean() > 0.999
    same = out.pix_to_face == ref.pix_to_face
    assert torch.allclose(out.zbuf[same], ref.zbuf[same], atol=1e-5)
    assert torch.allclose(out.dists[same], ref.dists[same], atol=1e-6)
    sil = SoftSilhouetteShader()
    a, b = sil(ref, meshes)[..., 3], sil(out, meshes)[..., 3]
    assert (a - b).abs().max() < 0.05
    if blur_sigma > 0:
        (ga,) = torch.autograd.grad(a.sum(), verts)
        (gb,) = torch.autograd.grad(b.sum(), verts)
        assert gb.abs().sum() > 0
        assert torch.allclose(ga, gb, atol=1e-3 * ga.abs().max().item())


def test_turntable_frames():
    from recon.render import mesh_turntable

    asset = load_builtin("torus")
    frames = mesh_turntable(asset.verts, asset.faces, asset.vert_colors, frames=3, size=32)
    plain = mesh_turntable(asset.verts, asset.faces, None, frames=2, size=32)
    assert len(frames) == 3 and len(plain) == 2
    for im in frames + plain:
        assert im.shape == (32, 32, 3) and im.dtype == np.uint8
        assert (im < 250).any() and (im == 255).any()  # the mesh and the white background
    assert not np.array_equal(frames[0], frames[1])  # the camera moved


def test_heldout_views_are_prepared_with_the_targets():
    """One-time work belongs to target preparation (cached), not to the first evaluation."""
    before = targets.render_count
    v = render_views(load_builtin("torus"), ViewSettings(num_views=2, image_size=16, heldout_views=1, eval_size=24),
                     "cpu")
    assert v.heldout_images.shape == (1, 24, 24, 3) and v.heldout_silhouettes.shape == (1, 24, 24)
    assert targets.render_count == before + 1


def test_a_stop_during_preparation_abandons_it():
    from recon.worker import Interrupted, watching

    targets._views_cache.clear()
    calls = []

    def reason():
        calls.append(1)
        return "stopped" if len(calls) > 1 else None  # let the first chunk start, then stop

    with watching(reason), pytest.raises(Interrupted):
        render_views(load_builtin("cow"), ViewSettings(num_views=40, image_size=32), "cpu")
    assert not any(k[1].num_views == 40 for k in targets._views_cache)  # nothing half-made is cached
