"""Rendering splats: PyTorch3D's pulsar sphere renderer (and, for comparison, the points rasteriser with
alpha compositing), and the per-thread intra-op thread count the steps run with."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from typing import Any, Sequence

import torch

from .params import SplatParams

#: Half-depth of the slab that pulsar normalises depths over: each camera sees depths from its distance
#: to the origin minus this to its distance plus this. Pulsar's occlusion is a softmax over normalised
#: depth with temperature ``gamma``, so the tighter the slab around the object, the sharper the
#: occlusion for a given gamma; splats outside it are not drawn. 1.5: the cube's half-side.
DEPTH_HALF_RANGE = 1.5


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op torch threads on this thread (OpenMP's setting is per thread), then
    restore. Pulsar's CPU code is serial; the torch ops around it are small, and on a loaded 2-core
    machine each parallel region waits for a second thread to be scheduled: a step took 2.6x as long
    with 2 threads as with 1 (see the measurements in :mod:`recon.splatting`)."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)



class PulsarRenderers:
    """Pulsar renderers by image size, each with room for a number of splats (grown in powers of two).

    A native pulsar renderer owns working buffers, so one call at a time may use it (the lock). Its
    backward pass works from the saved tensors alone (checked: gradients are unchanged when another
    forward pass on the same renderer comes in between), so sharing one instance is safe; a run may
    still own one (:func:`render`'s ``renderers``) so that runs never wait on each other's lock.
    """

    def __init__(self) -> None:
        self._by_size: dict[tuple[int, str], Any] = {}
        self.lock = threading.Lock()

    def get(self, size: int, n: int, cameras, device: torch.device):
        from pytorch3d.renderer import PointsRasterizationSettings, PointsRasterizer
        from pytorch3d.renderer.points.pulsar.unified import PulsarPointsRenderer

        key = (size, str(device))
        r = self._by_size.get(key)
        if r is None or r.capacity < n:
            cap = 1 << max(12, math.ceil(math.log2(max(n, 1))))
            rasterizer = PointsRasterizer(cameras=cameras, raster_settings=PointsRasterizationSettings(image_size=size))
            r = PulsarPointsRenderer(rasterizer, n_channels=4, max_num_spheres=cap).to(device)
            r.capacity = cap
            self._by_size[key] = r
        r.rasterizer.cameras = cameras
        return r


_default_renderers = PulsarRenderers()


def render(splats: SplatParams, cameras, image_size: int, background: Sequence[float] = (0.0, 0.0, 0.0), *,
           backend: str = "pulsar", gamma: float = 1e-2, points_per_pixel: int = 8,
           depth_half_range: float = DEPTH_HALF_RANGE, renderers: PulsarRenderers | None = None) -> torch.Tensor:
    """(B, S, S, 4) renders of `splats` from `cameras` (B FoVPerspectiveCameras, square images):
    RGB composited on `background`, alpha the coverage (the rendered silhouette). Differentiable in
    every splat parameter.

    ``backend="pulsar"``: PyTorch3D's pulsar sphere renderer (``PulsarPointsRenderer``): each pixel
    blends the spheres its ray hits with a softmax over their normalised depth (temperature `gamma`:
    small = the front sphere wins, hard edges; large = soft, translucent) weighted by opacity and by
    how centrally the ray hits; the background takes part with a fixed weight.

    ``backend="raster"``: ``PointsRasterizer`` (the `points_per_pixel` nearest disks, radii projected
    per view) with alpha = opacity * (1 - d^2 / r^2) composited front to back by ``AlphaCompositor``.
    """
    n = len(splats)
    b = len(cameras)
    device = splats.positions.device
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    if n == 0:
        out = torch.zeros(b, image_size, image_size, 4, device=device)
        out[..., :3] = bg
        return out
    rgb, radii, opacity = splats.rgb(), splats.radii(), splats.opacity()
    if backend == "pulsar":
        return _render_pulsar(splats.positions, rgb, radii, opacity, cameras, image_size, bg, gamma,
                              depth_half_range, renderers or _default_renderers)
    if backend == "raster":
        return _render_raster(splats.positions, rgb, radii, opacity, cameras, image_size, bg, points_per_pixel)
    raise ValueError(f"unknown backend {backend!r}")


def _render_pulsar(pos, rgb, radii, opacity, cameras, size, bg, gamma, half_range, renderers) -> torch.Tensor:
    from pytorch3d.structures import Pointclouds

    b = len(cameras)
    feats = torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=1)  # the 4th channel composites to coverage
    clouds = Pointclouds(points=[pos] * b, features=[feats] * b)
    dist = cameras.get_camera_center().norm(dim=-1).tolist()  # (B,) distances to the origin
    near = [max(0.05, d - half_range) for d in dist]
    far = [d + half_range for d in dist]
    with renderers.lock:
        r = renderers.get(size, len(pos), cameras, pos.device)
        r.rasterizer.raster_settings.radius = radii  # world-space radii (radius_world=True)
        # `fov` is passed explicitly: PulsarPointsRenderer converts the camera's own fov from degrees to
        # radians *in place* (PyTorch3D 0.7.9), which would shrink the cameras' field of view call by call.
        return r(clouds, gamma=[gamma] * b, radius_world=True, znear=near, zfar=far,
                 fov=[float(f) for f in cameras.fov.reshape(-1).expand(b).tolist()], degrees=bool(cameras.degrees),
                 bg_col=torch.cat([bg, bg.new_zeros(1)]), opacity=opacity)


def _render_raster(pos, rgb, radii, opacity, cameras, size, bg, points_per_pixel) -> torch.Tensor:
    from pytorch3d.renderer import AlphaCompositor, PointsRasterizationSettings, PointsRasterizer
    from pytorch3d.structures import Pointclouds

    b = len(cameras)
    depth = cameras.get_world_to_view_transform().transform_points(pos[None].expand(b, -1, -1))[..., 2]  # (B, N)
    fov = cameras.fov.reshape(-1).expand(b).to(pos)
    half = torch.tan((torch.deg2rad(fov) if cameras.degrees else fov) / 2)
    r_ndc = radii[None] / (depth.clamp(min=1e-3) * half[:, None])  # (B, N) NDC radius of each disk
    clouds = Pointclouds(points=[pos] * b)
    settings = PointsRasterizationSettings(image_size=size, radius=r_ndc.detach(), points_per_pixel=points_per_pixel,
                                           bin_size=0)
    frags = PointsRasterizer(cameras=cameras, raster_settings=settings)(clouds)
    idx = frags.idx.long()  # (B, S, S, K) packed indices, -1 where empty
    valid = idx >= 0
    safe = idx.clamp(min=0)
    r2 = (r_ndc.reshape(-1) ** 2)[safe]
    alpha = (1 - frags.dists / r2).clamp(0, 1) * opacity.repeat(b)[safe]
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    feats = torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=1).repeat(b, 1).t()  # (4, B*N)
    out = AlphaCompositor()(idx.permute(0, 3, 1, 2), alpha.permute(0, 3, 1, 2), feats).permute(0, 2, 3, 1)
    color = out[..., :3] + (1 - out[..., 3:]) * bg
    return torch.cat([color, out[..., 3:]], dim=-1)

