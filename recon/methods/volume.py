"""Voxel volume fitting: a grid of densities and colours rendered by ray marching.

Follows the PyTorch3D tutorial ``fit_textured_volume``: a ``Volumes`` grid holds log-densities
(initialised to -4) and log-colours (initialised to 0), both passed through a sigmoid; a
``VolumeRenderer`` casts one ray per pixel (``NDCMultinomialRaysampler``, depth 0.1 to 3.0) and
composites the samples with the ``EmissionAbsorptionRaymarcher``. Each step renders a few of the
target views and compares colours and silhouettes with a Huber loss.

Targets, evaluation, snapshots and turntables come from :class:`~recon.methods.volumetric.VolumetricMethod`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pytorch3d.renderer import NDCMultinomialRaysampler, VolumeRenderer, VolumeSampler
from pytorch3d.structures import Volumes

from ..params import knob
from ..targets import downsample
from .base import ITERATIONS_HELP, Result
from .volumetric import MAX_DEPTH, MIN_DEPTH, VOLUME_EXTENT, VolumetricMethod, huber


@dataclass
class VolumeConfig:
    color_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Colour weight", group="Loss weights", live=True,
                               help="Huber loss between rendered and target colours. Too low: the shape forms but "
                                    "stays grey; too high relative to the silhouette: faint floaters in the "
                                    "background are tolerated.")
    silhouette_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Silhouette weight", group="Loss weights",
                                    live=True,
                                    help="Huber loss between rendered opacity and the target silhouette. Too low: "
                                         "cloudy density around the cow; too high: a crisp outline with blotchy colour.")
    lr: float = knob(0.1, 1e-4, 1.0, step=1e-4, label="Learning rate", group="Optimiser", live=True, log=True,
                     help="Adam step size on the log-densities and log-colours, divided by 10 for the last quarter "
                          "of the run. Too low: the cow fades in slowly; too high: speckled noise and flicker.")
    iterations: int = knob(300, 1, 20000, label="Iterations", group="Run", help=ITERATIONS_HELP)
    grid_size: int = knob(128, 16, 256, step=8, label="Grid size (voxels per side)", group="Volume",
                          help="Voxels per side of the 3-unit cube. Higher: sharper detail but memory and time grow "
                               "with its cube; lower: blocky, blurred cow.")
    coarse_grid: int = knob(0, 0, 128, step=8, label="Coarse start grid (0: off)", group="Volume",
                            help="Start on a grid this size and upsample it to the full grid size at the fraction "
                                 "below: fewer voxels to fit early on. 0 fits the full grid from the start; too small: the "
                                 "upsampled start is too blurry to help.")
    grow_at: float = knob(0.5, 0.0, 1.0, step=0.05, label="Upsample at (fraction of iterations)", group="Volume",
                          help="When the coarse grid is upsampled and the coarse images give way to full-size ones. "
                               "Too early: little gained; too late: little time left to sharpen the full grid.")
    coarse_image_size: int = knob(0, 0, 256, step=16, label="Coarse start image size (0: off)", group="Rendering",
                                  help="Render this many pixels per side until the upsampling point above, against "
                                       "downsampled targets: early steps cost a fraction. 0: full size from the start; "
                                       "too small: the first steps only see a blur.")
    points_per_ray: int = knob(150, 8, 512, label="Points per ray", group="Rendering",
                               help="Samples along each ray between depth 0.1 and 3.0. Too few: the rays step over "
                                    "voxels (banding, holes); more: smoother but time grows linearly.")
    image_size: int = knob(128, 32, 256, step=16, label="Image size (pixels)", group="Rendering",
                           help="Side of the target and rendered images. Smaller: much faster (time grows with its "
                                "square) but blurrier; larger: finer detail, slower.")
    views_per_step: int = knob(10, 1, 40, label="Views per step", group="Rendering",
                               help="Training views rendered each step. Fewer: faster, noisier steps; more: smoother "
                                    "steps, slower.")
    num_views: int = knob(40, 4, 100, label="Training views", group="Targets",
                          help="Target views on the ring around the cow. Too few: holes and wrong colours between "
                               "them (seen in the held-out views); more: a longer one-off render at the start.")
    display_threshold: float = knob(0.1, 0.01, 0.99, step=0.01, label="3D view density threshold", group="Display",
                                    live=True,
                                    help="Voxels denser than this are drawn in the 3D view. Lower: fog and floaters "
                                         "appear; higher: only the solid core.")
    seed: int = knob(0, 0, 2**31 - 1, label="Seed", group="Run",
                     help="Random seed of the view order; the same seed and settings repeat a run.")


class Volume(VolumetricMethod):
    name = "volume"
    title = "Voxel volume (ray marching)"
    Config = VolumeConfig
    tutorial = "fit_textured_volume"
    explain = (
        "**What is optimised:** a voxel grid over a 3-unit cube: a log-density and a log-colour per voxel, each "
        "through a sigmoid.\n\n"
        "**Rendering:** one ray per pixel, points sampled between depth 0.1 and 3.0, densities and colours "
        "interpolated from the grid and composited front to back (emission-absorption).\n\n"
        "**Loss terms:** *color* is the Huber distance between rendered and target pixel colours; *silhouette* "
        "between the rendered opacity and the target silhouette.\n\n"
        "**Quality:** PSNR and silhouette IoU on held-out cameras between the training views (higher is better)."
    )
    presets = {
        "Tutorial": dict(color_weight=1.0, silhouette_weight=1.0, lr=0.1, iterations=300, grid_size=128,
                         coarse_grid=0, coarse_image_size=0, points_per_ray=150, image_size=128, views_per_step=10,
                         num_views=40),
        # Chosen by measurement on a quiet 2-core CPU, scored at 128 px like the tutorial: coarse to fine,
        # a 64^3 grid on 64-px images for the first 40% (~0.2 s per step), then the full 128^3 grid on
        # 128-px images (~1.6 s per step). Held-out PSNR ~26.9 dB after 30 s, 27.2 after 60 s, 27.6 after
        # ~160 s, 27.66 at ~190 s; peak memory ~1.7 GB. Fewer points per ray cap it (64: 27.0 dB), so
        # do fewer views per step (4: 27.58, 2: 27.50: each step's colours follow its views' shading);
        # a lower learning rate on the fine grid converges slower.
        "Quick": dict(color_weight=1.0, silhouette_weight=1.0, lr=0.1, iterations=200, grid_size=128,
                      coarse_grid=64, grow_at=0.4, coarse_image_size=64, points_per_ray=96, image_size=128,
                      views_per_step=6, num_views=40),
        # A failure mode: Quick with the largest learning rate. Adam moves every voxel's log-density by
        # ~1 per step, so densities flip between empty and solid: speckle and flicker instead of a cow,
        # and a loss that jumps instead of falling. Lower the learning rate live to watch it settle.
        "Too high learning rate (speckle)": dict(color_weight=1.0, silhouette_weight=1.0, lr=1.0, iterations=150,
                                                 grid_size=64, coarse_grid=0, coarse_image_size=0, points_per_ray=64,
                                                 image_size=64, views_per_step=4, num_views=40),
    }

    def __init__(self, target: Any, cfg: VolumeConfig, device: torch.device) -> None:
        super().__init__(target, cfg, device)
        size = cfg.coarse_grid if 0 < cfg.coarse_grid < cfg.grid_size else cfg.grid_size
        self.log_densities = torch.full((1, size, size, size), -4.0, device=device, requires_grad=True)
        self.log_colors = torch.zeros((3, size, size, size), device=device, requires_grad=True)
        self.optimizer = self.make_optimizer([self.log_densities, self.log_colors], cfg)
        self._renderers: dict[tuple[int, int], Any] = {}
        self._targets: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # training targets by image size

    def volumes(self, batch: int) -> Volumes:
        """The grid as a batch of `batch` identical ``Volumes`` (sigmoid of the parameters)."""
        densities = torch.sigmoid(self.log_densities)  # (1, D, D, D)
        colors = torch.sigmoid(self.log_colors)  # (3, D, D, D)
        return Volumes(densities=densities[None].expand(batch, *densities.shape),
                       features=colors[None].expand(batch, *colors.shape),
                       voxel_size=VOLUME_EXTENT / densities.shape[-1])

    def renderer(self, size: int) -> VolumeRenderer:
        key = (size, self.cfg.points_per_ray)
        if key not in self._renderers:
            raysampler = NDCMultinomialRaysampler(image_width=size, image_height=size, n_pts_per_ray=key[1],
                                                  min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
            self._renderers[key] = VolumeRenderer(raysampler=raysampler, raymarcher=self.raymarcher)
        return self._renderers[key]

    def maybe_grow(self) -> None:
        """Coarse-to-fine: upsample the parameters to the full grid once, and restart Adam on them.

        (Carrying Adam's moments over, upsampled and rescaled, was measured: no gain, so it restarts.)
        """
        cfg = self.cfg
        if self.log_densities.shape[-1] == cfg.grid_size or self.coarse_phase():
            return
        size = (cfg.grid_size,) * 3
        with torch.no_grad():
            up = [torch.nn.functional.interpolate(p[None], size=size, mode="trilinear", align_corners=False)[0]
                  for p in (self.log_densities, self.log_colors)]
        self.log_densities, self.log_colors = (u.requires_grad_(True) for u in up)
        self.optimizer = self.make_optimizer([self.log_densities, self.log_colors], cfg)

    def coarse_phase(self) -> bool:
        """Before the upsampling point: the coarse grid and coarse images (where set) are in use."""
        return self.iteration < round(self.cfg.grow_at * self.cfg.iterations)

    def train_size(self) -> int:
        """Image side of this step: the coarse size before the upsampling point (when set), else the full size."""
        cfg = self.cfg
        coarse = 0 < cfg.coarse_image_size < cfg.image_size and self.coarse_phase()
        return cfg.coarse_image_size if coarse else cfg.image_size

    def targets_at(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training images (N, S, S, 3) and silhouettes (N, S, S) at `size` (area-downsampled), on the device."""
        if size not in self._targets:
            self._targets[size] = downsample(self.images, self.silhouettes, size)
        return self._targets[size]

    def step(self) -> dict[str, torch.Tensor]:
        self.maybe_grow()
        self.update_lr()
        self.optimizer.zero_grad(set_to_none=True)
        idx = self.next_batch()
        cams = self.views.cameras(self.device, idx=idx)
        size = self.train_size()
        images, silhouettes = self.targets_at(size)
        rgba = self.renderer(size)(cameras=cams, volumes=self.volumes(len(idx)))[0]  # (B, H, W, 4)
        terms = {
            "color": huber(rgba[..., :3], images[idx]).abs().mean(),
            "silhouette": huber(rgba[..., 3], silhouettes[idx]).abs().mean(),
        }
        return self.finish_step(terms)

    @torch.no_grad()
    def render(self, cameras, size: int, chunk: int | None = None) -> torch.Tensor:
        return self.render_in_chunks(cameras, size,
                                     lambda part: self.renderer(size)(cameras=part, volumes=self.volumes(len(part)))[0],
                                     per=chunk)

    def field(self, ray_bundle) -> tuple[torch.Tensor, torch.Tensor]:
        return VolumeSampler(self.volumes(ray_bundle.origins.shape[0]))(ray_bundle)

    @torch.no_grad()
    def result(self) -> Result:
        """The fitted grid itself, at the resolution it was fitted at (voxel values, no resampling).

        PyTorch3D's ``Volumes`` index their cells [z, y, x]; the exported grid is [x, y, z] (see
        :meth:`density_grid`), with the same cell centres: voxel size extent / D, centred on the origin.
        """
        dens = torch.sigmoid(self.log_densities)[0].permute(2, 1, 0)  # (X, Y, Z)
        cols = torch.sigmoid(self.log_colors).permute(3, 2, 1, 0)  # (X, Y, Z, 3)
        return Result(grid=(dens.float().cpu().numpy(), cols.float().cpu().numpy(), VOLUME_EXTENT))
