"""The Method protocol every reconstruction method follows, and the plain data it hands out.

A method is built on the worker thread (``Method(asset, cfg, device)`` may take a while: it can
render target views), then the runner calls :meth:`Method.step` in a loop, :meth:`Method.evaluate`
now and then, and :meth:`Method.snapshot` when somebody is looking. Everything that leaves a method
is plain CPU data (numpy arrays, floats), so the UI never touches a tensor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

#: Help text of every method's iteration count.
ITERATIONS_HELP = ("Number of optimisation steps. Too few: the fit stops before it converges; too many: time spent "
                   "for little gain (you can Stop early).")


@dataclass
class MeshData:
    """A triangle mesh as plain arrays."""

    verts: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int64
    colors: np.ndarray | None = None  # (V, 3) float32 in [0, 1]


@dataclass
class PointData:
    """A coloured point cloud as plain arrays (e.g. voxels above a density threshold)."""

    xyz: np.ndarray  # (N, 3) float32
    colors: np.ndarray | None = None  # (N, 3) float32 in [0, 1]


@dataclass
class Snapshot:
    """What the page shows of a run at one iteration; plain data only."""

    iteration: int
    mesh: MeshData | None = None
    points: PointData | None = None
    # uint8 (H, W, 3) images by name: "render", "target", "silhouette", "target_silhouette"
    images: dict[str, np.ndarray] = field(default_factory=dict)
    view: int | None = None  # which training view the images show


class Method:
    """Base class of the four methods. Subclasses set the class attributes and implement step()."""

    name: ClassVar[str]  # registry key, e.g. "deform"
    title: ClassVar[str]  # shown in the page
    Config: ClassVar[type]
    tutorial: ClassVar[str]  # the PyTorch3D tutorial this method follows
    explain: ClassVar[str] = ""  # markdown: what is optimised, what each loss term measures
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    metrics: ClassVar[tuple[str, ...]] = ()  # names returned by evaluate()
    shows_images: ClassVar[bool] = False  # snapshots carry rendered views next to the targets
    #: preset applied when the method is chosen, by device type ("cpu" / "cuda"); none: the defaults
    device_presets: ClassVar[dict[str, str]] = {}

    def __init__(self, asset: Any, cfg: Any, device: torch.device) -> None:
        self.asset = asset
        self.cfg = cfg
        self.device = device
        self.optimizer: torch.optim.Optimizer | None = None

    # --- the loop -------------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        """One optimisation step. Returns 0-d tensors: each unweighted term and ``total``."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Quality on held-out data (e.g. Chamfer distance, PSNR, IoU). Cheap enough to run often."""
        return {}

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    # --- results (called after the run has ended, from one thread at a time) ----------------
    def turntable(self, frames: int = 36, size: int = 128) -> list[np.ndarray]:
        """uint8 (size, size, 3) renders of the result from cameras circling it; [] if unsupported."""
        return []

    def density_grid(self, resolution: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
        """Volumetric methods: (densities (D, D, D), colours (D, D, D, 3), extent of the cube in world units).

        Mesh methods raise NotImplementedError.
        """
        raise NotImplementedError(f"{self.name} has no density field")

    # --- live edits -----------------------------------------------------------------------
    def apply_live(self, changes: dict[str, Any]) -> None:
        """Apply new values of live knobs (weights, learning rate) from the next step on."""
        self.cfg = dataclasses.replace(self.cfg, **changes)
        if "lr" in changes and self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = changes["lr"]

    def set_lr(self, lr: float) -> None:
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr


def weighted_total(cfg: Any, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of ``cfg.<term>_weight * term``: loss keys equal the stems of their weight fields."""
    total = 0.0
    for key, value in terms.items():
        total = total + getattr(cfg, f"{key}_weight") * value
    return total
