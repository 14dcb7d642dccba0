"""What the methods that fit multi-view images by rendering a field share: the voxel volume, the NeRF
and the point splats.

Targets (training and held-out views, from a mesh or a dataset), the view order of each step, the
tutorials' learning-rate schedule, held-out evaluation (a cheap live estimate and the full score),
snapshots for the page, turntables, and sampling a field on a grid (the 3D view's points and the
exported density grid).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pytorch3d.renderer import (
    EmissionAbsorptionRaymarcher,
    FoVPerspectiveCameras,
    MonteCarloRaysampler,
    RayBundle,
    look_at_view_transform,
)

from ..images import to_uint8
from ..metrics import IMAGE_METRICS, psnr, silhouette_iou
from ..render import CAMERA_DIST
from ..targets import ViewSettings, views_for
from ..worker import checkpoint, seeded
from .base import Method, PointData, Snapshot

#: Side of the cube (world units) that the voxel grid covers, centred on the origin.
VOLUME_EXTENT = 3.0
#: Near and far depth of every ray, as in both tutorials (the far plane is the volume extent).
MIN_DEPTH, MAX_DEPTH = 0.1, 3.0
#: Most ray samples evaluated at once when rendering without gradients (bounds the memory).
CHUNK_SAMPLES = 1 << 20
#: Resolution of the density grid behind the live point cloud, and the cap on its points.
DISPLAY_RESOLUTION = 48
MAX_POINTS = 20_000
#: Rays of the live estimate: a fixed random subset of the held-out views' pixels at full size. Its
#: MSE is an unbiased estimate of the full score's (a lower resolution would flatter a blurry fit).
LIVE_RAYS = 2048
LIVE_SEED = 20261130


def huber(x: torch.Tensor, y: torch.Tensor, scaling: float = 0.1) -> torch.Tensor:
    """The tutorials' pseudo-Huber loss, elementwise: quadratic below `scaling`, linear above."""
    diff_sq = (x - y) ** 2
    return ((1 + diff_sq / scaling**2).clamp(1e-4).sqrt() - 1) * scaling


def grid_points(resolution: int, extent: float, device: torch.device | str) -> torch.Tensor:
    """Cell centres of a resolution^3 grid over the cube of side `extent`; index [i, j, k] is (x_i, y_j, z_k)."""
    c = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution * extent - extent / 2
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1)  # (D, D, D, 3)


def turntable_cameras(frames: int, device: torch.device | str, fov: float = 60.0) -> FoVPerspectiveCameras:
    """Cameras circling the object at the training distance and elevation (as ``generate_rotating_volume``)."""
    azim = torch.linspace(-180.0, 180.0, frames + 1)[:-1] + 180.0
    R, T = look_at_view_transform(dist=CAMERA_DIST, elev=torch.zeros(frames), azim=azim)
    return FoVPerspectiveCameras(device=device, R=R.to(device), T=T.to(device), fov=fov)


def sample_images_at_rays(images: torch.Tensor, xys: torch.Tensor) -> torch.Tensor:
    """Pixels of `images` (B, H, W, C) under the NDC ray locations `xys` (B, R, 2) -> (B, R, C).

    PyTorch3D's NDC has +x left and +y up; grid_sample's has -1 at the left and top, hence the sign.
    """
    b, c = images.shape[0], images.shape[-1]
    sampled = torch.nn.functional.grid_sample(images.permute(0, 3, 1, 2), -xys.reshape(b, -1, 1, 2),
                                              align_corners=True)  # (B, C, R, 1)
    return sampled.permute(0, 2, 3, 1).reshape(b, *xys.shape[1:-1], c)


class VolumetricMethod(Method):
    """What the volume, NeRF and splat methods share: multi-view targets, evaluation and the result views.

    Subclasses implement :meth:`step` and :meth:`render` (cameras -> (B, H, W, 4) RGBA without
    gradients, in chunks); ray-marched ones also :meth:`field` (a RayBundle -> densities (..., 1),
    colours (..., 3)), which the live estimate, the 3D view and the density grid sample. Their configs
    have ``image_size``, ``num_views``, ``views_per_step``, ``iterations``, ``lr``, ``seed`` and
    ``display_threshold``; ray-marched ones ``points_per_ray``.
    """

    shows_images = True
    metrics = IMAGE_METRICS
    live_note = f"{LIVE_RAYS:,} fixed random pixels of the held-out views"
    device_presets = {"cpu": "Quick", "cuda": "Tutorial"}
    grid_extent: float = VOLUME_EXTENT  # side of the cube that density_grid() covers
    display_resolution: int = DISPLAY_RESOLUTION  # density grid behind the live point cloud
    sweep = "ring"  # the volume and NeRF tutorials' cameras (black background)
    points_label = "density points"  # what the 3D view calls the points() it shows

    def __init__(self, target: Any, cfg: Any, device: torch.device) -> None:
        super().__init__(target, cfg, device)
        self.views = views_for(target, ViewSettings(num_views=cfg.num_views, image_size=cfg.image_size,
                                                    sweep=self.sweep), device)
        self.images = self.views.images.to(device)  # (N, H, W, 3)
        self.silhouettes = self.views.silhouettes.to(device)  # (N, H, W)
        self.raymarcher = EmissionAbsorptionRaymarcher()
        self._shown = 0  # the training view the next snapshot shows (cycles)
        self._live: tuple[RayBundle, torch.Tensor, torch.Tensor] | None = None

    # --- the loop helpers ---------------------------------------------------------------------
    def next_batch(self) -> torch.Tensor:
        """Indices of the training views of this step."""
        n = self.views.num_views
        return torch.randperm(n, generator=self.generator)[: min(self.cfg.views_per_step, n)]

    def update_lr(self) -> None:
        """The tutorials' schedule: the (live) learning rate divided by 10 for the last quarter."""
        decay = 0.1 if self.iteration >= round(0.75 * self.cfg.iterations) else 1.0
        self.set_lr(self.cfg.lr * decay)

    # --- what subclasses provide ----------------------------------------------------------------
    def render(self, cameras: FoVPerspectiveCameras, size: int) -> torch.Tensor:
        """(B, size, size, 4) RGBA renders from `cameras`, without gradients, in chunks."""
        raise NotImplementedError

    def field(self, ray_bundle: RayBundle) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities (..., P, 1) and colours (..., P, 3) at the points of `ray_bundle`."""
        raise NotImplementedError

    def camera_chunk(self, size: int) -> int:
        """How many cameras one display render takes at once."""
        return max(1, CHUNK_SAMPLES // (size * size * getattr(self.cfg, "points_per_ray", 1)))

    def render_in_chunks(self, cameras: FoVPerspectiveCameras, size: int, render_part: Any,
                         per: int | None = None) -> torch.Tensor:
        """``render_part(cameras[chunk])`` over chunks of `per` cameras (default: what fits the sample
        budget), noticing a Stop between them."""
        out = []
        per = per or self.camera_chunk(size)
        for start in range(0, len(cameras), per):
            checkpoint()
            out.append(render_part(cameras[list(range(start, min(start + per, len(cameras))))]))
        return torch.cat(out)  # (B, size, size, 4)

    # --- evaluation and views -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, live: bool = False) -> dict[str, float]:
        if live:
            rgba, target_rgb, target_sil = self.live_rays()
        else:
            v = self.views
            rgba = self.render(v.cameras(self.device, heldout=True), v.heldout_images.shape[1]).cpu()
            target_rgb, target_sil = v.heldout_images, v.heldout_silhouettes
        return {"psnr": psnr(rgba[..., :3], target_rgb), "iou": silhouette_iou(rgba[..., 3], target_sil)}

    def live_rays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The live estimate's renders (M, R, 4) of a fixed ray subset, and the held-out pixels under them."""
        if self._live is None:
            v = self.views
            cams = v.cameras(self.device, heldout=True)
            per_view = max(1, LIVE_RAYS // len(cams))
            sampler = MonteCarloRaysampler(min_x=-1.0, max_x=1.0, min_y=-1.0, max_y=1.0, n_rays_per_image=per_view,
                                           n_pts_per_ray=getattr(self.cfg, "points_per_ray", 64),
                                           min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
            with seeded(LIVE_SEED):
                bundle = sampler(cameras=cams)
            xys = bundle.xys.cpu()
            self._live = (bundle, sample_images_at_rays(v.heldout_images, xys),
                          sample_images_at_rays(v.heldout_silhouettes[..., None], xys)[..., 0])
        bundle, rgb, sil = self._live
        return self.render_rays(bundle).cpu(), rgb, sil

    def render_rays(self, bundle: RayBundle) -> torch.Tensor:
        """RGBA (..., 4) of the rays of `bundle`: the field marched front to back (emission-absorption)."""
        dens, cols = self.field(bundle)
        return self.raymarcher(rays_densities=dens, rays_features=cols)

    @torch.no_grad()
    def sample_field(self, xyz: torch.Tensor, chunk: int = CHUNK_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
        """Densities (N,) and colours (N, 3) at world points `xyz` (N, 3), each seen from outside.

        The points go in as rays of length zero, so the methods' own ray-bundle code samples them;
        the view direction points at the origin, as a camera on a sphere around the object sees them.
        """
        dens, cols = [], []
        for part in torch.split(xyz.to(self.device), chunk):
            checkpoint()
            dirs = -torch.nn.functional.normalize(part, dim=-1, eps=1e-6)
            bundle = RayBundle(origins=part[None], directions=dirs[None], lengths=part.new_zeros(1, len(part), 1),
                               xys=part.new_zeros(1, len(part), 2))
            d, c = self.field(bundle)  # (1, n, 1, 1), (1, n, 1, 3)
            dens.append(d.reshape(-1))
            cols.append(c.reshape(-1, 3))
        return torch.cat(dens), torch.cat(cols)

    def density_grid(self, resolution: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
        """(densities (D, D, D), colours (D, D, D, 3), extent): index [i, j, k] is the cell centre
        (x_i, y_j, z_k), x_i = (i + 0.5) / D * extent - extent / 2; densities in [0, 1]."""
        pts = grid_points(resolution, self.grid_extent, self.device).reshape(-1, 3)
        dens, cols = self.sample_field(pts)
        shape = (resolution,) * 3
        return (dens.reshape(shape).float().cpu().numpy(), cols.reshape(*shape, 3).float().cpu().numpy(),
                float(self.grid_extent))

    def points(self) -> PointData:
        """Cells of a coarse density grid above the display threshold, with their colours (capped)."""
        dens, cols, extent = self.density_grid(self.display_resolution)
        keep = dens > self.cfg.display_threshold
        xyz = grid_points(self.display_resolution, extent, "cpu").numpy()[keep]
        colors = cols[keep]
        if len(xyz) > MAX_POINTS:  # keep the densest cells
            order = np.argsort(-dens[keep])[:MAX_POINTS]
            xyz, colors = xyz[order], colors[order]
        return PointData(xyz=xyz.astype(np.float32), colors=np.clip(colors, 0, 1).astype(np.float32))

    @torch.no_grad()
    def snapshot(self) -> Snapshot:
        view = self._shown % self.views.num_views
        self._shown += 1
        rgba = self.render(self.views.cameras(self.device, idx=[view]), self.cfg.image_size)[0].cpu().numpy()
        images = {"target": to_uint8(self.views.images[view].numpy()), "render": to_uint8(rgba[..., :3]),
                  "target_silhouette": to_uint8(self.views.silhouettes[view].numpy()),
                  "silhouette": to_uint8(rgba[..., 3])}
        return Snapshot(iteration=self.iteration, points=self.points(), images=images, view=view)

    @torch.no_grad()
    def turntable(self, frames: int = 36, size: int = 128) -> list[np.ndarray]:
        rgba = self.render(turntable_cameras(frames, self.device, self.views.fov), size).cpu().numpy()
        return [to_uint8(im[..., :3]) for im in rgba]
