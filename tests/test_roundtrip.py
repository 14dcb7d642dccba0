"""Exports hold what was fitted: each exported artefact, loaded back from its file and rendered with
PyTorch3D from the held-out cameras, scores within 0.5 dB PSNR and 0.01 IoU of the run's own final
score (as an outside evaluator would check it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from pytorch3d.renderer import (
    BlendParams,
    EmissionAbsorptionRaymarcher,
    MeshRasterizer,
    MeshRenderer,
    NDCMultinomialRaysampler,
    PointLights,
    RasterizationSettings,
    SoftPhongShader,
    TexturesVertex,
    VolumeRenderer,
)
from pytorch3d.structures import Meshes, Volumes

from recon.assets import load_builtin
from recon.methods import get_method
from recon.metrics import psnr, silhouette_iou
from recon.params import validate
from recon.render import TARGET_LIGHT
from recon.runner import Run

PSNR_TOLERANCE, IOU_TOLERANCE = 0.5, 0.01


def finished_run(name: str, **values) -> Run:
    cls = get_method(name)
    cfg, messages = validate(cls.Config, values)
    assert not messages
    run = Run(cls, load_builtin("cow"), cfg, torch.device("cpu")).start()
    assert run.wait_settled(300) and run.poll().state == "done"
    assert run.poll().final  # the run's own full score
    return run


def heldout(run: Run):
    return run.with_result(lambda m: m.views)


def test_the_exported_volume_grid_renders_like_the_fitted_one(tmp_path):
    from recon.export import export_core

    run = finished_run("volume", grid_size=48, coarse_grid=24, grow_at=0.5, coarse_image_size=0, points_per_ray=48,
                       image_size=48, views_per_step=4, num_views=8, iterations=30)
    files = export_core(run, tmp_path, "cow")
    data = np.load(files["npz"])
    density, colors, extent = data["density"], data["colors"], float(data["extent"])
    assert density.shape == (48, 48, 48) and colors.shape == (48, 48, 48, 3)  # the fitted resolution
    # The file's layout note: density[i, j, k] is the cell centred at (x_i, y_j, z_k); PyTorch3D's
    # Volumes index [z, y, x] with the same cell centres when the voxel size is extent / D.
    volumes = Volumes(densities=torch.as_tensor(density).permute(2, 1, 0)[None, None],
                      features=torch.as_tensor(colors).permute(3, 2, 1, 0)[None],
                      voxel_size=extent / density.shape[0])
    views = heldout(run)
    size = views.heldout_images.shape[1]
    renderer = VolumeRenderer(raysampler=NDCMultinomialRaysampler(image_width=size, image_height=size,
                                                                  n_pts_per_ray=48, min_depth=0.1, max_depth=3.0),
                              raymarcher=EmissionAbsorptionRaymarcher())
    cams = views.cameras("cpu", heldout=True)
    with torch.no_grad():
        rgba = torch.cat([renderer(cameras=cams[[i]], volumes=volumes)[0] for i in range(len(cams))])
    final = run.poll().final
    assert psnr(rgba[..., :3], views.heldout_images) == pytest.approx(final["psnr"], abs=PSNR_TOLERANCE)
    assert silhouette_iou(rgba[..., 3], views.heldout_silhouettes) == pytest.approx(final["iou"], abs=IOU_TOLERANCE)


@pytest.mark.parametrize("kind", ["obj", "glb"])
def test_the_exported_textured_mesh_renders_like_the_fitted_one(tmp_path, kind):
    from recon.export import export_core

    run = finished_run("textured_mesh", image_size=32, num_views=8, views_per_step=2, faces_per_pixel=4,
                       sphere_level=3, optimizer="adam", lr=0.03, iterations=25)
    files = export_core(run, tmp_path, "cow")
    loaded = trimesh.load(files[kind], force="mesh", process=False)
    verts = torch.as_tensor(np.asarray(loaded.vertices), dtype=torch.float32)
    faces = torch.as_tensor(np.asarray(loaded.faces), dtype=torch.int64)
    rgb = torch.as_tensor(np.asarray(loaded.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32)
    views = heldout(run)
    size = views.heldout_images.shape[1]
    cams = views.cameras("cpu", heldout=True)
    # The target shader: hard rasterisation, Phong with the tutorials' light, the method's background.
    mesh = Meshes([verts], [faces], textures=TexturesVertex([rgb])).extend(len(cams))
    lights = PointLights(location=TARGET_LIGHT)
    renderer = MeshRenderer(MeshRasterizer(cameras=cams, raster_settings=RasterizationSettings(image_size=size)),
                            SoftPhongShader(cameras=cams, lights=lights,
                                            blend_params=BlendParams(sigma=1e-4, gamma=1e-4,
                                                                     background_color=views.background)))
    with torch.no_grad():
        rgba = renderer(mesh)
    final = run.poll().final
    assert psnr(rgba[..., :3], views.heldout_images) == pytest.approx(final["psnr"], abs=PSNR_TOLERANCE)
    assert silhouette_iou(rgba[..., 3], views.heldout_silhouettes) == pytest.approx(final["iou"], abs=IOU_TOLERANCE)


def test_the_nerf_density_is_exported_at_128_cubed_or_finer(tmp_path):
    from recon.export import export_core

    run = finished_run("nerf", harmonic_functions=4, hidden=16, rays_per_image=64, points_per_ray=16,
                       views_per_step=2, image_size=32, num_views=8, iterations=5)
    files = export_core(run, tmp_path, "cow")
    assert np.load(files["npz"])["density"].shape == (128, 128, 128)
