"""What a method fits against, computed once per target and cached.

A target is a mesh (:class:`recon.assets.MeshAsset`, rendered here) or a multi-view image dataset
(:class:`recon.datasets.Dataset`, fitted as it is). Either way the image-based methods get the same
:class:`TargetViews`: training images, silhouettes and cameras, and held-out ones for evaluation.

- :func:`target_points`: what the 3D view shows of the target (surface points, or the cameras of a
  dataset).
- :func:`views_for`: the training and held-out views at a method's settings, prepared once per
  target and settings (the tutorials' renders of ``fit_textured_mesh`` / ``fit_textured_volume`` /
  ``fit_simple_neural_radiance_field`` for a mesh; resized and composited images for a dataset).
- :func:`psnr` and :func:`silhouette_iou`: the held-out quality measures every image-based method
  reports.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from pytorch3d.ops import sample_points_from_meshes
from pytorch3d.renderer import FoVPerspectiveCameras, look_at_view_transform

from .assets import ASSET_DIR, BUILTINS, AssetError, MeshAsset, load_builtin
from .datasets import Dataset, composite, read_dataset, write_dataset
from .render import CAMERA_DIST, render_target
from .text import display_name, md_escape
from .uploads import load_upload
from .worker import checkpoint, current, seeded, watching


class _LRU(OrderedDict):
    """A small least-recently-used cache (targets are big; a server sees many)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.lock = threading.Lock()
        self._making: dict[Any, threading.Lock] = {}  # one maker per key; others wait for its result

    def get_or_make(self, key: Any, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
            making = self._making.setdefault(key, threading.Lock())
        with making:  # a slow render blocks only the callers that want the same thing
            with self.lock:
                if key in self:
                    return self[key]
            value = make()
            with self.lock:
                self[key] = value
                self._making.pop(key, None)
                while len(self) > self.size:
                    self.popitem(last=False)
        return value


_points_cache = _LRU(16)


def target_points(target: MeshAsset | Dataset, n: int = 3000) -> np.ndarray:
    """What the 3D view shows of a target, (n, 3) float32: points on a mesh's surface (fixed seed),
    or a dataset's training camera centres."""
    if isinstance(target, Dataset):
        return camera_centres(target.train.R, target.train.T).numpy().astype(np.float32)

    def sample() -> np.ndarray:
        with seeded(0):
            return sample_points_from_meshes(target.meshes("cpu"), n)[0].numpy().astype(np.float32)

    return _points_cache.get_or_make((target.key, n), sample)


# --- multi-view renders ----------------------------------------------------------------------


#: Side in pixels of the held-out images that every image-based method is scored on.
EVAL_SIZE = 128


@dataclass(frozen=True)
class ViewSettings:
    """How a method sees its target (the tutorials' defaults).

    For a mesh, ``sweep="mesh"`` is ``fit_textured_mesh``'s camera path (elevation 0..360 and
    azimuth -180..180 swept together, white background); ``sweep="ring"`` is ``generate_cow_renders``
    used by the volume and NeRF tutorials (elevation 0, azimuth over +-180 around the back, black
    background). A dataset brings its own cameras: only the image size and the background apply.
    """

    num_views: int = 20
    image_size: int = 128
    sweep: str = "mesh"  # "mesh" | "ring"
    dist: float = CAMERA_DIST
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


@dataclass(frozen=True)
class TargetViews:
    """Training and held-out views of one target, on the CPU; prepared once, then shared read-only."""

    settings: ViewSettings
    R: torch.Tensor  # (N, 3, 3) world-to-view rotations (PyTorch3D's row-vector convention)
    T: torch.Tensor  # (N, 3)
    images: torch.Tensor  # (N, H, W, 3) in [0, 1], on the background
    silhouettes: torch.Tensor  # (N, H, W) in [0, 1]
    heldout_R: torch.Tensor  # (M, 3, 3)
    heldout_T: torch.Tensor  # (M, 3)
    heldout_images: torch.Tensor  # (M, E, E, 3), E = the evaluation size
    heldout_silhouettes: torch.Tensor  # (M, E, E)
    fov: float = 60.0  # vertical = horizontal field of view in degrees (square images)
    notes: tuple[str, ...] = ()  # what was done to fit the target to the methods (datasets)

    @property
    def num_views(self) -> int:
        return int(self.R.shape[0])

    @property
    def background(self) -> tuple[float, float, float]:
        return self.settings.background

    def cameras(self, device: torch.device | str, idx: Any = None, heldout: bool = False) -> FoVPerspectiveCameras:
        """Cameras of the training views `idx` (all when None), or of the held-out ones."""
        R, T = (self.heldout_R, self.heldout_T) if heldout else (self.R, self.T)
        if idx is not None:
            R, T = R[idx], T[idx]
        return FoVPerspectiveCameras(device=device, R=R.to(device), T=T.to(device), fov=self.fov)


def camera_centres(R: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """World positions (N, 3) of cameras (R, T): the point with X @ R + T = 0."""
    return -(T[:, None, :] @ R.transpose(1, 2))[:, 0]


def _render(asset: MeshAsset, settings: ViewSettings, R: torch.Tensor, T: torch.Tensor,
            device: torch.device, chunk: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders of `asset` from the cameras (R, T), as (N, H, W, 3) images and (N, H, W) silhouettes.

    On the CPU, chunks of views render on two threads: PyTorch3D's CPU rasteriser runs on one core
    and releases the GIL, so two chunks in flight use both cores of a small machine. A Stop is
    noticed between chunks (the helper thread checks its run's reason too).
    """
    mesh = asset.meshes(device)
    jobs = [(R[s:s + chunk], T[s:s + chunk]) for s in range(0, R.shape[0], chunk)]
    reason = current() or (lambda: None)

    def one(rt: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with watching(reason):
            checkpoint()
            return render_target(mesh, rt[0], rt[1], settings.image_size, settings.background, settings.sigma,
                                 settings.faces_per_pixel)

    if device.type == "cpu" and len(jobs) > 1:
        with ThreadPoolExecutor(max_workers=max(1, min(2, torch.get_num_threads()))) as pool:
            futures = [pool.submit(one, job) for job in jobs]
            try:
                parts = [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()
    else:
        parts = [one(job) for job in jobs]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _mesh_views(asset: MeshAsset, settings: ViewSettings, device: torch.device) -> TargetViews:
    elev, azim, h_elev, h_azim = settings.angles()
    R, T = look_at_view_transform(dist=settings.dist, elev=elev, azim=azim)
    hR, hT = look_at_view_transform(dist=settings.dist, elev=h_elev, azim=h_azim)
    images, sils = _render(asset, settings, R, T, device)
    held = _render(asset, dataclasses.replace(settings, image_size=settings.eval_size), hR, hT, device)
    return TargetViews(settings, R, T, images, sils, hR, hT, *held)


def _dataset_views(data: Dataset, settings: ViewSettings) -> TargetViews:
    images, sils = composite(data.train, settings.background, settings.image_size)
    eval_size = min(settings.eval_size, data.test.images.shape[1])
    held = composite(data.test, settings.background, eval_size)
    notes = data.notes + ((f"Held-out views are scored at {eval_size} px, the dataset's size.",)
                          if eval_size < settings.eval_size else ())
    return TargetViews(settings, data.train.R, data.train.T, images, sils, data.test.R, data.test.T, *held,
                       fov=data.train.fov_deg, notes=notes)


_views_cache = _LRU(8)
#: How many preparations actually happened (cache misses); tests read it to check cache hits.
render_count = 0


def views_for(target: MeshAsset | Dataset, settings: ViewSettings = ViewSettings(),
              device: torch.device | str = "cpu") -> TargetViews:
    """The training and held-out views of `target` at `settings`: prepared once per (target, settings),
    held-out views included, then cached; a Stop during the preparation abandons it."""

    def prepare() -> TargetViews:
        global render_count
        render_count += 1
        if isinstance(target, Dataset):
            return _dataset_views(target, settings)
        return _mesh_views(target, settings, torch.device(device))

    return _views_cache.get_or_make((target.key, settings), prepare)


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


# --- what a session can pick -------------------------------------------------------------------------

#: Built-in image datasets: name -> (folder, one-line description).
BUILTIN_DATASETS: dict[str, tuple[str, str]] = {
    "cow views (dataset)": ("cow_views", "The cow as 40 training and 8 test images at 128 px, in the NeRF-synthetic "
                                         "layout (made by `python -m recon export-views`)"),
}
UPLOADED_MESH = "uploaded mesh"
UPLOADED_DATASET = "uploaded dataset"


@functools.lru_cache(maxsize=None)
def load_builtin_dataset(name: str) -> Dataset:
    return read_dataset(ASSET_DIR / BUILTIN_DATASETS[name][0])


class TargetChoice:
    """The targets one session can pick: the built-in ones, and its own last uploaded mesh and dataset."""

    def __init__(self) -> None:
        self.mesh: MeshAsset | None = None
        self.dataset: Dataset | None = None

    @staticmethod
    def names() -> list[str]:
        return [*BUILTINS, *BUILTIN_DATASETS, UPLOADED_MESH, UPLOADED_DATASET]

    @staticmethod
    def is_builtin(name: str) -> bool:
        return name in BUILTINS or name in BUILTIN_DATASETS

    def resolve(self, name: str) -> MeshAsset | Dataset:
        """The target a choice names; AssetError saying what to do when it is not there."""
        if name == UPLOADED_MESH:
            if self.mesh is None:
                raise AssetError("Upload a mesh first (.obj, .ply, .off, .stl or .glb), or pick a built-in target.")
            return self.mesh
        if name == UPLOADED_DATASET:
            if self.dataset is None:
                raise AssetError("Upload a dataset first (a .zip in the NeRF-synthetic layout), or pick a built-in "
                                 "target.")
            return self.dataset
        if name in BUILTIN_DATASETS:
            return load_builtin_dataset(name)
        return load_builtin(name)

    def upload(self, path: str) -> tuple[str, MeshAsset | Dataset]:
        """Read an uploaded file: a .zip is a dataset, anything else a mesh; (its choice, the target)."""
        if str(path).lower().endswith(".zip"):
            self.dataset = read_dataset(path)
            return UPLOADED_DATASET, self.dataset
        self.mesh = load_upload(path, display_name(str(path)))
        return UPLOADED_MESH, self.mesh

    def choice_for(self, name: str, source: str) -> str | None:
        """The choice that gives back a target named `name` from `source` ("builtin" / "upload"), if here."""
        if source == "builtin" and self.is_builtin(name):
            return name
        if self.mesh is not None and name == self.mesh.name:
            return UPLOADED_MESH
        if self.dataset is not None and name == self.dataset.name:
            return UPLOADED_DATASET
        return None

    def describe(self, target: MeshAsset | Dataset, uploaded: bool = False) -> str:
        """A line of Markdown about a target (names escaped: they come from users)."""
        name = md_escape(target.name)
        if isinstance(target, Dataset):
            text = (f"Dataset **{name}**: {len(target.train)} training and {len(target.test)} held-out views at "
                    f"{target.train.images.shape[1]} px.")
            return text + "".join(f"\n\nNote: {md_escape(n)}" for n in target.notes)
        kind = "Uploaded" if uploaded else "Target"
        text = f"{kind} **{name}**: {target.verts.shape[0]:,} vertices, {target.num_faces:,} faces"
        text += ", centred and scaled into [-1, 1]³ as the tutorials do." if uploaded else "."
        if target.key.startswith("builtin:") and target.name in BUILTINS:
            text += " " + BUILTINS[target.name][1] + "."
        return text + "".join(f"\n\nNote: {md_escape(n)}" for n in target.notes)

    def clear(self) -> None:
        self.mesh = self.dataset = None


def adapt_settings(cfg: Any, target: MeshAsset | Dataset) -> tuple[Any, list[str]]:
    """A config whose camera assumptions fit `target`: a dataset brings its own views, so the number of
    training views is the dataset's, a step takes at most that many, and images are no larger than the
    dataset's. Returns the config and a note per change."""
    if not isinstance(target, Dataset):
        return cfg, []
    changes, notes = {}, []
    n, size = len(target.train), int(target.train.images.shape[1])
    if hasattr(cfg, "num_views") and cfg.num_views != n:
        changes["num_views"] = n
        notes.append(f"training views {cfg.num_views} → the dataset's {n}")
    if hasattr(cfg, "views_per_step") and cfg.views_per_step > n:
        changes["views_per_step"] = n
        notes.append(f"views per step {cfg.views_per_step} → {n} (all the dataset has)")
    if hasattr(cfg, "image_size") and cfg.image_size > size:
        fit = max(32, size // 16 * 16)
        changes["image_size"] = fit
        notes.append(f"image size {cfg.image_size} → {fit} px (the dataset's images are {size} px)")
    return (dataclasses.replace(cfg, **changes) if changes else cfg), notes


def views_for_config(cls: Any, target: MeshAsset | Dataset, cfg: Any, device: Any = "cpu",
                     same_size: bool = False) -> TargetViews:
    """The views a method of class `cls` with config `cfg` fits (what its setup prepares); with
    `same_size` the held-out views at the training size (a dataset's images all have one size)."""
    settings = ViewSettings(num_views=cfg.num_views, image_size=cfg.image_size, sweep=getattr(cls, "sweep", "mesh"))
    if same_size:
        settings = dataclasses.replace(settings, eval_size=cfg.image_size)
    return views_for(target, settings, device)


def write_views(views: TargetViews, out: Any) -> Any:
    """Training and held-out views in the NeRF-synthetic layout (a folder, or a zip for a .zip path)."""
    return write_dataset(out, (views.images, views.silhouettes, views.R, views.T),
                         (views.heldout_images, views.heldout_silhouettes, views.heldout_R, views.heldout_T),
                         fov_deg=views.fov)
