"""Point splats: parameters, a differentiable renderer, density control and the 3DGS ``.ply`` layout.

Independent of recon's Method classes (torch, numpy and PyTorch3D only), so that any method can use it:

- :class:`SplatParams`: N splats as leaf tensors (positions, colour logits, log radii, opacity logits);
  :func:`init_splats` starts them at random in the 3-unit cube, optionally carved by the training
  silhouettes (a visual hull) and coloured from the target pixels.
- :func:`render`: (B, S, S, 4) RGBA with PyTorch3D's pulsar sphere renderer (``PulsarPointsRenderer``),
  or for comparison the points rasteriser with alpha compositing (``backend="raster"``).
- :func:`make_optimizer`: Adam, one parameter group per kind of parameter.
- :class:`DensityControl` / :class:`DensityController`: clone, split, prune and cap on a schedule, after
  gsplat's default strategy, keeping Adam's moments in step with the splats.
- :func:`write_splat_ply` / :func:`read_splat_ply`: the binary layout 3D Gaussian splatting viewers read.

Measurements (2026-11-30, the cow's 40 "ring" views with a black background, held-out PSNR/IoU on the 5
held-out ring views at 128 px; a shared 2-core CPU, so each figure carries the 1-minute load average of
the machine, 2 meaning one other busy process; script ``/tmp/splatbench/compare_renderers.py``):

Renderer speed, forward + backward of one step at the Quick settings (5000 carved splats, 4 views of
128 px, one intra-op thread), median of 12: pulsar 143 ms (133 + 10; the same at gamma 0.2 and 0.02),
points rasteriser + ``AlphaCompositor`` (8 points per pixel) 456 ms (430 + 27): 3.2x slower (load 2.6;
at load 4.8: 297 vs 1205 ms). Both run on one core: pulsar's CPU code is serial and neither releases the
GIL, so views cannot be rendered in parallel threads.

Quality after 60 s of optimisation (wall clock, evaluation not counted):

- pulsar, the Quick preset: 28.1 dB, IoU 0.964 (162 of 220 steps, load 6.5); 28.8 dB, IoU 0.964 (all
  220 steps in 36 s, load 2.5). At 30 s: 26.2 dB (load 6.5), 28.4 dB (load 2.5). Peak RSS 1.3-1.4 GB,
  most of it the one-off target render.
- points rasteriser, Quick with 3000 splats (at most 4000) and 150 steps (its step costs 3x as much):
  26.4 dB, IoU 0.983 (122 steps, load 5.5). Per step it learns faster (after 100 steps at 128 px: 26.1 vs
  25.5 dB) and its alpha compositing gives crisper outlines (the higher IoU), but per second pulsar wins
  by about 2 dB. Chosen: pulsar.
- The voxel volume's Quick preset, for reference: about 27 dB at 60 s.

What the Quick settings rest on (quality per step counted in steps at 1 thread, 2026-11-30, load 2-6):

- Carving pays: before any step, carved splats already score 19.0 dB / IoU 0.83 against training views
  at 64 px (random: 14.4 / 0.23); carving 5000 splats takes ~0.2 s. After the Quick run: carved 28.8 dB /
  IoU 0.964, random start 23.3 dB / 0.906 (it spends its steps fading and pruning splats in empty space).
- Colour loss: Huber (recon's pseudo-Huber, scale 0.1) beat L1 by 1.1 dB (28.6 vs 27.4 at 280 steps).
- Gamma (pulsar's blending temperature) annealed from 0.2 to 0.02 over the run: soft blending early
  (usable silhouette gradients: at a constant 0.01 the held-out IoU fell from 0.74 to 0.66 in 600 steps,
  coverage being all-or-nothing), sharp late (the front surface hides the back: a constant 0.1 leaves the
  far side showing through, 26.5 vs 26.7 dB). Annealing to 0.005 was worse (25.8).
- Depth normalisation: pulsar's depth softmax runs over [d - 1.5, d + 1.5] around each camera's distance
  d to the origin instead of [znear, zfar] = [1, 100]: +0.4 dB at the same gamma.
- Learning rates: radius 0.002 (0.001-0.003 alike; 0.01: -0.4 dB; 0.03: -1.4 dB, splats balloon),
  position 0.003 decayed to a tenth (0.01: -0.9 dB); colour and opacity 0.05 (0.02 and 0.1: within
  0.15 dB).
- More splats are better per step but cost linearly: 3000 -> 6000 splats +0.9 dB at equal steps;
  10000 was too slow for 60 s. Two views per step: worse per second than four.
- Density control at these thresholds: Quick with it 28.8 dB / IoU 0.964 (5000 -> 7000 splats, the cap)
  against 28.4 dB / 0.972 without (and 10% faster steps): a small gain in a 220-step run. From a random
  start it matters more: without it (the failure preset) 21.7 dB / 0.895 with a haze of floaters; with
  it the floaters are pruned. Opacity resets (3DGS) were not used: too few steps for them to pay back.
- Intra-op threads: steps run with one torch thread (:func:`intra_op_threads`): with two, each small
  torch op around pulsar's serial kernel waits for the second thread to be scheduled: 0.59 s vs
  0.15 s per Quick step at load 2.5, 0.83 vs 0.23 s at load 8.5.
- Coarse-to-fine images (64 px for the first 40%) did not pay: 27.7 dB after 300 steps, against 28.4
  after 260 full-size steps that took less time.

Pulsar notes: ``PulsarPointsRenderer`` converts the camera's fov from degrees to radians in place on
every call (PyTorch3D 0.7.9), so :func:`render` passes ``fov`` explicitly; radii are world-space
(``radius_world=True``); the alpha channel is a fourth colour channel that is 1 on every splat and 0
on the background, which pulsar's normalised blending turns into coverage.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

#: DC coefficient of the degree-0 real spherical harmonic: rgb = 0.5 + SH_C0 * f_dc.
SH_C0 = 0.28209479177387814
#: Side of the cube (world units, centred on the origin) that splats are initialised in; the
#: volumetric methods' voxel grid covers the same cube.
CUBE_EXTENT = 3.0
#: Half-depth of the slab that pulsar normalises depths over: each camera sees depths from its distance
#: to the origin minus this to its distance plus this. Pulsar's occlusion is a softmax over normalised
#: depth with temperature ``gamma``, so the tighter the slab around the object, the sharper the
#: occlusion for a given gamma; splats outside it are not drawn. 1.5: the cube's half-side.
DEPTH_HALF_RANGE = 1.5
#: The parameter kinds, in the order of the optimiser's groups.
KINDS = ("positions", "colors", "log_radii", "opacities")


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op torch threads on this thread (OpenMP's setting is per thread), then
    restore. Pulsar's CPU code is serial; the torch ops around it are small, and on a loaded 2-core
    machine each parallel region waits for a second thread to be scheduled: a step took 2.6x as long
    with 2 threads as with 1 (see the measurements above)."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- parameters ----------------------------------------------------------------------------------


class SplatParams:
    """N splats as leaf tensors: positions (N, 3), colour logits (N, 3), log radii (N,), opacity logits (N,).

    Colours and opacities go through a sigmoid, radii through exp, so every raw value is unconstrained.
    """

    def __init__(self, positions: torch.Tensor, colors: torch.Tensor, log_radii: torch.Tensor,
                 opacities: torch.Tensor) -> None:
        self.positions = positions
        self.colors = colors  # logits
        self.log_radii = log_radii
        self.opacities = opacities  # logits

    @classmethod
    def from_values(cls, positions: torch.Tensor, rgb: torch.Tensor, radii: torch.Tensor,
                    opacity: torch.Tensor | float, requires_grad: bool = True) -> SplatParams:
        """Splats from plain values (colours and opacities in (0, 1), radii > 0)."""
        n = positions.shape[0]
        eps = 1e-6
        op = torch.as_tensor(opacity, dtype=torch.float32, device=positions.device).expand(n)
        tensors = (positions.float(), torch.logit(rgb.float().clamp(eps, 1 - eps)), radii.float().log(),
                   torch.logit(op.clamp(eps, 1 - eps)))
        return cls(*(t.detach().clone().contiguous().requires_grad_(requires_grad) for t in tensors))

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in KINDS}

    def rgb(self) -> torch.Tensor:
        return torch.sigmoid(self.colors)

    def radii(self) -> torch.Tensor:
        return torch.exp(self.log_radii)

    def opacity(self) -> torch.Tensor:
        return torch.sigmoid(self.opacities)

    def detached(self) -> SplatParams:
        return SplatParams(*(t.detach() for t in self.tensors().values()))


def knn_radii(positions: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Mean distance of each point to its `k` nearest neighbours (3DGS's initial scale), (N,)."""
    from pytorch3d.ops import knn_points

    pts = positions.detach()[None]
    d2 = knn_points(pts, pts, K=min(k + 1, len(positions))).dists[0, :, 1:]  # drop the point itself
    return d2.clamp(min=1e-10).sqrt().mean(-1)


def project_to_pixels(points: torch.Tensor, cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC xy (V, N, 2) of world `points` (N, 3) in each camera, and whether each lies in front of it (V, N)."""
    pts = points[None].expand(len(cameras), -1, -1)
    ndc = cameras.transform_points(pts, eps=1e-6)  # PyTorch3D NDC: +x left, +y up
    depth = cameras.get_world_to_view_transform().transform_points(pts)[..., 2]
    return ndc[..., :2], depth > 0


def sample_images(images: torch.Tensor, ndc_xy: torch.Tensor) -> torch.Tensor:
    """Values of `images` (V, H, W, C) at NDC points (V, N, 2) -> (V, N, C) (bilinear, zero outside)."""
    grid = -ndc_xy[:, :, None, :]  # grid_sample: -1 is left/top; PyTorch3D NDC: +1 is left/top
    out = torch.nn.functional.grid_sample(images.permute(0, 3, 1, 2), grid, align_corners=False,
                                          padding_mode="zeros")  # (V, C, N, 1)
    return out[..., 0].permute(0, 2, 1)


def init_splats(n: int, *, cameras=None, silhouettes: torch.Tensor | None = None,
                images: torch.Tensor | None = None, carve: bool = True, keep_fraction: float = 0.9,
                opacity: float = 0.5, radius_scale: float = 1.0, extent: float = CUBE_EXTENT,
                generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> SplatParams:
    """`n` splats at random points of the cube of side `extent` centred at the origin.

    With ``carve`` (and training `cameras` (V) with their `silhouettes` (V, H, W)), only points that
    project inside the silhouette in at least `keep_fraction` of the views are kept (a visual hull),
    drawn in rounds until there are `n`. With `images` (V, H, W, 3) the colours start as the mean of
    the target pixels the point projects to (else grey). Radii start at the mean distance to the 3
    nearest splats times `radius_scale`; opacities at `opacity`.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    carve = carve and cameras is not None and silhouettes is not None
    kept: list[torch.Tensor] = []
    have = 0
    for _ in range(200 if carve else 1):
        cand = (torch.rand(max(4 * n, 4096) if carve else n, 3, generator=gen) - 0.5) * extent
        if carve:
            cand = cand.to(silhouettes.device)
            xy, front = project_to_pixels(cand, cameras)
            inside = (sample_images(silhouettes[..., None].float(), xy)[..., 0] > 0.5) & front  # (V, M)
            cand = cand[inside.float().mean(0) >= keep_fraction]
        kept.append(cand)
        have += len(cand)
        if have >= n:
            break
    pts = torch.cat(kept)[:n]
    if len(pts) < n:  # the silhouettes are (nearly) empty: fill up with random points
        pts = torch.cat([pts, (torch.rand(n - len(pts), 3, generator=gen) - 0.5).to(pts.device) * extent])
    pts = pts.to(device)
    if images is not None and cameras is not None:
        xy, front = project_to_pixels(pts.to(images.device), cameras)
        cols = sample_images(images, xy)  # (V, n, 3)
        w = front.float()[..., None]
        rgb = ((cols * w).sum(0) / w.sum(0).clamp(min=1)).clamp(0.02, 0.98).to(device)
    else:
        rgb = torch.full((n, 3), 0.5, device=device)
    radii = knn_radii(pts) * radius_scale if n > 1 else torch.full((n,), 0.05, device=device)
    return SplatParams.from_values(pts, rgb, radii.clamp(1e-3, extent / 4), opacity)


# --- rendering -----------------------------------------------------------------------------------


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


# --- optimiser -----------------------------------------------------------------------------------


def make_optimizer(splats: SplatParams, lrs: dict[str, float]) -> torch.optim.Adam:
    """Adam with one parameter group per kind of parameter (named as in :data:`KINDS`), each with its lr."""
    groups = [{"params": [getattr(splats, k)], "lr": lrs[k], "name": k} for k in KINDS]
    return torch.optim.Adam(groups, eps=1e-15)


def _edit(splats: SplatParams, optimizer: torch.optim.Optimizer | None, keep: torch.Tensor,
          new: dict[str, torch.Tensor] | None = None) -> None:
    """Keep the splats where `keep` (N,) and append `new` ones (values of every kind); Adam's moments
    follow the kept splats, and start at zero for the new ones."""
    for kind in KINDS:
        old = getattr(splats, kind)
        parts = [old.detach()[keep]] + ([new[kind].detach().to(old)] if new else [])
        param = torch.cat(parts).contiguous().requires_grad_(True)
        setattr(splats, kind, param)
        if optimizer is None:
            continue
        for group in optimizer.param_groups:
            if group["params"][0] is not old:
                continue
            group["params"][0] = param
            state = optimizer.state.pop(old, None)
            if state:
                n_new = param.shape[0] - int(keep.sum())
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape[:1] == old.shape[:1] and value.dim() > 0:
                        state[key] = torch.cat([value[keep], value.new_zeros((n_new, *value.shape[1:]))])
                optimizer.state[param] = state


# --- density control -----------------------------------------------------------------------------


@dataclass
class DensityControl:
    """Thresholds and schedule of adaptive density control (after gsplat's ``DefaultStrategy``).

    Every `refine_every` steps from `refine_start` to `refine_stop`: splats whose mean position-gradient
    norm (per step in which they were seen) exceeds `grow_grad` grow: those with radius up to
    `grow_radius` are cloned (a copy in place; the two then move apart), larger ones are split into
    two of radius / `split_shrink` placed at random within the original (normal, std = radius / 2). Then splats with opacity
    below `prune_opacity`, radius above `prune_radius`, or outside the cube, are removed. The count
    never exceeds `max_splats` (the largest gradients grow first). With `reset_every` > 0, every
    that many steps all opacities are capped at `reset_opacity` (3DGS's opacity reset).
    """

    grow_grad: float = 2e-4
    grow_radius: float = 0.03
    split_shrink: float = 1.6
    prune_opacity: float = 0.01
    prune_radius: float = 0.3
    refine_start: int = 50
    refine_stop: int = 10_000
    refine_every: int = 50
    reset_every: int = 0
    reset_opacity: float = 0.1
    max_splats: int = 20_000
    extent: float = CUBE_EXTENT


class DensityState:
    """Running statistics of one run: summed position-gradient norms and how often each splat was seen."""

    def __init__(self, n: int, device: torch.device | str = "cpu") -> None:
        self.grad_sum = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)

    def reset(self, n: int) -> None:
        self.grad_sum = self.grad_sum.new_zeros(n)
        self.count = self.count.new_zeros(n)

    def mean_grad(self) -> torch.Tensor:
        return self.grad_sum / self.count.clamp(min=1)


class DensityController:
    """Adaptive density control of one run: call :meth:`after_backward` after each backward pass and
    :meth:`after_step` after each optimiser step (with the number of steps taken so far)."""

    def __init__(self, control: DensityControl, splats: SplatParams) -> None:
        self.control = control
        self.state = DensityState(len(splats), splats.positions.device)

    @torch.no_grad()
    def after_backward(self, splats: SplatParams, grad_scale: float = 1.0) -> None:
        """Accumulate each splat's position-gradient norm (times `grad_scale`, e.g. the views per step,
        so that the threshold does not depend on how many views the loss averages over)."""
        grad = splats.positions.grad
        if grad is None:
            return
        norm = grad.norm(dim=-1) * grad_scale
        seen = norm > 0
        self.state.grad_sum += norm
        self.state.count += seen.float()

    def due(self, step: int) -> bool:
        c = self.control
        return c.refine_every > 0 and c.refine_start <= step <= c.refine_stop and step % c.refine_every == 0

    @torch.no_grad()
    def after_step(self, step: int, splats: SplatParams, optimizer: torch.optim.Optimizer | None,
                   generator: torch.Generator | None = None) -> dict[str, int]:
        """Grow, prune and cap when `step` is a refinement step; reset opacities when due.
        Returns how many splats were cloned, split and pruned (empty when nothing was due)."""
        c = self.control
        out: dict[str, int] = {}
        if self.due(step):
            out = refine(c, self.state, splats, optimizer, generator)
            self.state.reset(len(splats))
        if c.reset_every > 0 and step % c.reset_every == 0 and c.refine_start <= step <= c.refine_stop:
            reset_opacity(splats, optimizer, c.reset_opacity)
        return out


@torch.no_grad()
def refine(c: DensityControl, state: DensityState, splats: SplatParams, optimizer: torch.optim.Optimizer | None,
           generator: torch.Generator | None = None) -> dict[str, int]:
    """One refinement: clone/split high-gradient splats, prune transparent, huge or escaped ones, cap the count."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    n = len(splats)
    grads = state.mean_grad()
    radii = splats.radii()
    high = grads > c.grow_grad
    # Cap: each clone or split adds one splat; grow the largest gradients first.
    room = max(0, c.max_splats - n)
    if int(high.sum()) > room:
        order = torch.argsort(torch.where(high, grads, torch.full_like(grads, -1.0)), descending=True)
        high = torch.zeros_like(high)
        high[order[:room]] = True
    clone = high & (radii <= c.grow_radius)
    split = high & (radii > c.grow_radius)
    n_clone, n_split = int(clone.sum()), int(split.sum())
    if n_clone or n_split:
        t = splats.tensors()
        new = {k: torch.cat([v[clone], v[split], v[split]]) for k, v in t.items()}
        # Split children: radius / split_shrink, centres drawn from a normal of half the parent's radius (a
        # sphere's radius is its edge, where a Gaussian's scale is one standard deviation), so most lie inside.
        offsets = torch.randn(2 * n_split, 3, generator=gen).to(radii) * radii[split].repeat(2)[:, None] / 2
        new["positions"][n_clone:] += offsets
        new["log_radii"][n_clone:] -= math.log(c.split_shrink)
        _edit(splats, optimizer, ~split, new)  # the split parents are replaced by their children
    pos, radii, opacity = splats.positions, splats.radii(), splats.opacity()
    prune = (opacity < c.prune_opacity) | (radii > c.prune_radius) | (pos.abs() > c.extent / 2).any(-1)
    over = len(splats) - int(prune.sum()) - c.max_splats
    if over > 0:  # still too many (e.g. the cap was lowered): drop the most transparent of the rest
        score = torch.where(prune, torch.full_like(opacity, -1.0), opacity)
        prune[torch.argsort(score)[int(prune.sum()):int(prune.sum()) + over]] = True
    n_prune = int(prune.sum())
    if n_prune:
        if n_prune == len(splats):  # never prune the last splat: keep the most opaque one
            prune[torch.argmax(opacity)] = False
            n_prune -= 1
        _edit(splats, optimizer, ~prune)
    return {"cloned": n_clone, "split": n_split, "pruned": n_prune}


@torch.no_grad()
def reset_opacity(splats: SplatParams, optimizer: torch.optim.Optimizer | None, value: float) -> None:
    """Cap every opacity at `value` and zero Adam's moments of the opacities (3DGS's opacity reset)."""
    cap = math.log(value / (1 - value))
    splats.opacities.clamp_(max=cap)
    if optimizer is not None:
        for group in optimizer.param_groups:
            if group["params"][0] is splats.opacities:
                for v in optimizer.state.get(splats.opacities, {}).values():
                    if isinstance(v, torch.Tensor) and v.dim() > 0:
                        v.zero_()


# --- the 3D Gaussian splatting .ply layout -------------------------------------------------------

#: Vertex properties of a degree-0 3DGS .ply, in the order the reference implementation writes them.
PLY_PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def write_splat_ply(path: str | Path, positions: np.ndarray, colors_rgb: np.ndarray, opacities: np.ndarray,
                    radii: np.ndarray) -> Path:
    """Write isotropic splats as a binary little-endian .ply in the layout 3DGS viewers read.

    Colours in [0, 1] become DC spherical-harmonic coefficients ``(rgb - 0.5) / SH_C0``, opacities in
    (0, 1) logits, radii log scales (the same on the three axes); normals are zero and every
    rotation the unit quaternion (w, x, y, z) = (1, 0, 0, 0).
    """
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = len(pos)
    rgb = np.asarray(colors_rgb, dtype=np.float64).reshape(n, 3)
    op = np.clip(np.asarray(opacities, dtype=np.float64).reshape(n), 1e-7, 1 - 1e-7)
    rad = np.asarray(radii, dtype=np.float64).reshape(n)
    if not (np.isfinite(pos).all() and np.isfinite(rgb).all() and np.isfinite(rad).all() and (rad > 0).all()):
        raise ValueError("splat positions, colours and radii must be finite, radii positive")
    data = np.zeros((n, len(PLY_PROPERTIES)), dtype="<f4")
    data[:, 0:3] = pos
    data[:, 6:9] = (rgb - 0.5) / SH_C0
    data[:, 9] = np.log(op) - np.log1p(-op)
    data[:, 10:13] = np.log(rad)[:, None]
    data[:, 13] = 1.0
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {p}\n" for p in PLY_PROPERTIES) + "end_header\n"
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(data.tobytes())
    return path


def read_splat_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions (N, 3), colours (N, 3), opacities (N,), radii (N,)) as float32 from a 3DGS .ply.

    Reads binary little-endian files whose vertex properties are all ``float``/``float32`` (any
    order, extra properties such as ``f_rest_*`` ignored); colours come from the DC coefficients,
    opacities through a sigmoid, radii as exp of the mean log scale.
    """
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a .ply file")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary little-endian .ply files are read")
    n, props, in_vertex = 0, [], False
    for line in lines:
        parts = line.split()
        if parts[:1] == ["element"]:
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                n = int(parts[2])
            elif n:
                raise ValueError(f"{path}: elements after the vertices are not supported")
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] not in ("float", "float32"):
                raise ValueError(f"{path}: vertex property {parts[-1]} is {parts[1]}, not float")
            props.append(parts[2])
    data = np.frombuffer(raw, dtype="<f4", count=n * len(props), offset=end + len("end_header\n"))
    data = data.reshape(n, len(props)).astype(np.float64)
    col = {p: i for i, p in enumerate(props)}
    missing = [p for p in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0") if p not in col]
    if missing:
        raise ValueError(f"{path}: missing vertex properties {missing}")
    pos = data[:, [col["x"], col["y"], col["z"]]]
    rgb = data[:, [col["f_dc_0"], col["f_dc_1"], col["f_dc_2"]]] * SH_C0 + 0.5
    opacity = 1.0 / (1.0 + np.exp(-data[:, col["opacity"]]))
    scales = [col[f"scale_{i}"] for i in range(3) if f"scale_{i}" in col]
    radii = np.exp(data[:, scales].mean(axis=1))
    return (pos.astype(np.float32), rgb.astype(np.float32), opacity.astype(np.float32), radii.astype(np.float32))


__all__ = [
    "CUBE_EXTENT", "DEPTH_HALF_RANGE", "KINDS", "PLY_PROPERTIES", "SH_C0", "DensityControl", "DensityController",
    "DensityState", "PulsarRenderers", "SplatParams", "init_splats", "intra_op_threads", "knn_radii", "make_optimizer",
    "read_splat_ply", "refine", "render", "reset_opacity", "write_splat_ply",
]
