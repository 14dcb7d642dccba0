"""What a method fits against, computed once per target and cached.

- :func:`target_points`: points sampled on the target surface, for the 3D view.
- :func:`render_views`: the multi-view training images and silhouettes of the tutorials
  ``fit_textured_mesh`` / ``fit_textured_volume`` / ``fit_simple_neural_radiance_field``, plus a
  separate set of held-out cameras between the training ones, for evaluation.
- :func:`psnr` and :func:`silhouette_iou`: the held-out quality measures every image-based method
  reports.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .assets import MeshAsset

_points_cache: dict[tuple[str, int], np.ndarray] = {}


def target_points(asset: MeshAsset, n: int = 3000) -> np.ndarray:
    """`n` points on the target's surface (fixed seed), as a (n, 3) float32 array; cached per target."""
    key = (asset.key, n)
    if key not in _points_cache:
        from pytorch3d.ops import sample_points_from_meshes

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            pts = sample_points_from_meshes(asset.meshes("cpu"), n)[0]
        _points_cache[key] = pts.numpy().astype(np.float32)
    return _points_cache[key]


# --- multi-view renders ----------------------------------------------------------------------


#: Side in pixels of the held-out images that every image-based method is scored on.
EVAL_SIZE = 128


@dataclass(frozen=True)
class ViewSettings:
    """How the training images of a target are rendered (the tutorials' defaults).

    ``sweep="mesh"`` is ``fit_textured_mesh``'s camera path (elevation 0..360 and azimuth
    -180..180 swept together, white background); ``sweep="ring"`` is ``generate_cow_renders``
    used by the volume and NeRF tutorials (elevation 0, azimuth over +-180 around the back,
    black background).
    """

    num_views: int = 20
    image_size: int = 128
    sweep: str = "mesh"  # "mesh" | "ring"
    dist: float = 2.7
    sigma: float = 1e-4  # silhouette softness
    faces_per_pixel: int = 50  # silhouette renderer
    heldout_views: int = 5
    #: Side of the held-out images. Fixed (the tutorials' 128 px) whatever the training size, so that
    #: every preset is scored by the same measure: a model fitted to 64-pixel images is judged at 128.
    eval_size: int = EVAL_SIZE

    @property
    def background(self) -> tuple[float, float, float]:
        return (1.0, 1.0, 1.0) if self.sweep == "mesh" else (0.0, 0.0, 0.0)

    def angles(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(elev, azim) of the training cameras, then of the held-out cameras (degrees)."""
        n = self.num_views
        if self.sweep == "mesh":
            elev = torch.linspace(0, 360, n)
            azim = torch.linspace(-180, 180, n)
        else:
            elev = torch.zeros(n)
            azim = torch.linspace(-180, 180, n) + 180.0
        # Held-out cameras sit half-way between consecutive training cameras, spread over the sweep.
        pick = torch.linspace(0, n - 2, self.heldout_views).round().long() if n > 1 else torch.zeros(1).long()
        h_elev = (elev[pick] + elev[(pick + 1).clamp(max=n - 1)]) / 2 + (0.0 if n > 1 else 30.0)
        h_azim = (azim[pick] + azim[(pick + 1).clamp(max=n - 1)]) / 2 + (0.0 if n > 1 else 45.0)
        return elev, azim, h_elev, h_azim


@dataclass
class TargetViews:
    """Rendered training and held-out views of one target, on the CPU.

    The held-out images are rendered the first time they are asked for (the first evaluation, after
    the first step), so that a run's first live update does not wait for them.
    """

    settings: ViewSettings
    R: torch.Tensor  # (N, 3, 3)
    T: torch.Tensor  # (N, 3)
    images: torch.Tensor  # (N, H, W, 3) in [0, 1]
    silhouettes: torch.Tensor  # (N, H, W) soft silhouettes in [0, 1]
    heldout_R: torch.Tensor  # (M, 3, 3)
    heldout_T: torch.Tensor  # (M, 3)
    render_heldout: Callable[[], tuple[torch.Tensor, torch.Tensor]] = field(repr=False, compare=False)
    _heldout: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _held(self) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            if self._heldout is None:
                self._heldout = self.render_heldout()
            return self._heldout

    @property
    def heldout_images(self) -> torch.Tensor:
        """(M, E, E, 3), E = settings.eval_size."""
        return self._held()[0]

    @property
    def heldout_silhouettes(self) -> torch.Tensor:
        """(M, E, E)."""
        return self._held()[1]

    @property
    def num_views(self) -> int:
        return int(self.R.shape[0])

    def cameras(self, device: torch.device | str, idx=None, heldout: bool = False):
        """FoVPerspectiveCameras for the training views `idx` (all when None), or the held-out ones."""
        from pytorch3d.renderer import FoVPerspectiveCameras

        R, T = (self.heldout_R, self.heldout_T) if heldout else (self.R, self.T)
        if idx is not None:
            R, T = R[idx], T[idx]
        return FoVPerspectiveCameras(device=device, R=R.to(device), T=T.to(device))


def _render_chunk(mesh, settings: ViewSettings, R: torch.Tensor, T: torch.Tensor,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB (hard rasterisation, Phong) and soft silhouettes of `mesh` from the cameras (R, T)."""
    from pytorch3d.renderer import (
        BlendParams,
        FoVPerspectiveCameras,
        MeshRenderer,
        PointLights,
        RasterizationSettings,
        SoftPhongShader,
        SoftSilhouetteShader,
    )

    from .render import TiledMeshRasterizer

    lights = PointLights(device=device, location=[[0.0, 0.0, -3.0]])
    blend = BlendParams(sigma=1e-4, gamma=1e-4, background_color=settings.background)
    rgb_raster = RasterizationSettings(image_size=settings.image_size, blur_radius=0.0, faces_per_pixel=1)
    sil_raster = RasterizationSettings(image_size=settings.image_size,
                                       blur_radius=math.log(1.0 / 1e-4 - 1.0) * settings.sigma,
                                       faces_per_pixel=settings.faces_per_pixel)
    cams = FoVPerspectiveCameras(device=device, R=R.to(device), T=T.to(device))
    meshes = mesh.extend(len(cams))
    rgb = MeshRenderer(TiledMeshRasterizer(cameras=cams, raster_settings=rgb_raster),
                       SoftPhongShader(device=device, cameras=cams, lights=lights, blend_params=blend))
    sil = MeshRenderer(TiledMeshRasterizer(cameras=cams, raster_settings=sil_raster),
                       SoftSilhouetteShader(blend_params=BlendParams(sigma=settings.sigma)))
    with torch.no_grad():
        images = rgb(meshes, cameras=cams, lights=lights)[..., :3].clamp(0, 1).cpu()
        sils = sil(meshes, cameras=cams, lights=lights)[..., 3].clamp(0, 1).cpu()
    return images, sils


def _render(asset: MeshAsset, settings: ViewSettings, R: torch.Tensor, T: torch.Tensor,
            device: torch.device, chunk: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders of `asset` from the cameras (R, T), as (N, H, W, 3) images and (N, H, W) silhouettes.

    On the CPU, chunks of views render on two threads: PyTorch3D's CPU rasteriser runs on one core
    and releases the GIL, so two chunks in flight use both cores of a small machine.
    """
    mesh = asset.meshes(device)
    starts = range(0, R.shape[0], chunk)
    jobs = [(R[s:s + chunk], T[s:s + chunk]) for s in starts]
    if device.type == "cpu" and len(jobs) > 1:
        from concurrent.futures import ThreadPoolExecutor

        workers = max(1, min(2, torch.get_num_threads()))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(lambda rt: _render_chunk(mesh, settings, rt[0], rt[1], device), jobs))
    else:
        parts = [_render_chunk(mesh, settings, r, t, device) for r, t in jobs]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


_views_cache: OrderedDict[tuple, TargetViews] = OrderedDict()
_views_lock = threading.Lock()
_VIEWS_CACHE_SIZE = 8
#: How many renders actually happened (cache misses); tests read it to check cache hits.
render_count = 0


def render_views(asset: MeshAsset, settings: ViewSettings = ViewSettings(),
                 device: torch.device | str = "cpu") -> TargetViews:
    """The training and held-out renders of `asset`; rendered once per (target, settings), then cached."""
    global render_count
    key = (asset.key, settings)
    with _views_lock:
        if key in _views_cache:
            _views_cache.move_to_end(key)
            return _views_cache[key]
    from pytorch3d.renderer import look_at_view_transform

    elev, azim, h_elev, h_azim = settings.angles()
    R, T = look_at_view_transform(dist=settings.dist, elev=elev, azim=azim)
    hR, hT = look_at_view_transform(dist=settings.dist, elev=h_elev, azim=h_azim)
    device = torch.device(device)
    images, sils = _render(asset, settings, R, T, device)
    held_settings = dataclasses.replace(settings, image_size=settings.eval_size)
    views = TargetViews(settings, R, T, images, sils, hR, hT,
                        render_heldout=lambda: _render(asset, held_settings, hR, hT, device))
    with _views_lock:
        render_count += 1
        _views_cache[key] = views
        while len(_views_cache) > _VIEWS_CACHE_SIZE:
            _views_cache.popitem(last=False)
    return views


def downsample(images: torch.Tensor, silhouettes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, H, W, 3) and silhouettes (N, H, W) area-averaged to (N, size, size, ...); unchanged at H.

    For coarse-to-fine schedules: a lower resolution's targets are the full-size ones averaged, not
    a second render.
    """
    if size == images.shape[1]:
        return images, silhouettes
    down = torch.nn.functional.interpolate
    return (down(images.permute(0, 3, 1, 2), size=(size, size), mode="area").permute(0, 2, 3, 1),
            down(silhouettes[:, None], size=(size, size), mode="area")[:, 0])


# --- held-out quality ----------------------------------------------------------------------


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] (mean over the whole batch)."""
    mse = torch.mean((pred.clamp(0, 1) - target) ** 2).item()
    return float(10 * math.log10(1.0 / max(mse, 1e-10)))


def silhouette_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of silhouettes thresholded at `threshold` (over the whole batch)."""
    p, t = pred > threshold, target > threshold
    union = (p | t).sum().item()
    return float((p & t).sum().item() / union) if union else 1.0
