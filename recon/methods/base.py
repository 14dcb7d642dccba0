"""The Method protocol every reconstruction method follows, and the plain data it hands out.

A method is built on the worker thread (``Method(target, cfg, device)`` may take a while: it can
render target views), then the runner calls :meth:`Method.step` in a loop, :meth:`Method.evaluate`
now and then (a cheap live estimate while it runs, the full score at the end), and
:meth:`Method.snapshot` when somebody is looking. Everything that leaves a method is plain CPU data
(numpy arrays, floats), so the UI never touches a tensor.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..cost import estimate
from ..metrics import Metric

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
    """A coloured point cloud as plain arrays (voxels above a density threshold, or splats)."""

    xyz: np.ndarray  # (N, 3) float32
    colors: np.ndarray | None = None  # (N, 3) float32 in [0, 1]
    sizes: np.ndarray | None = None  # (N,) float32 world-space radii; None: all the same size


@dataclass
class Snapshot:
    """What the page shows of a run at one iteration; plain data only."""

    iteration: int
    mesh: MeshData | None = None
    points: PointData | None = None
    # uint8 (H, W, 3) images by name: "render", "target", "silhouette", "target_silhouette"
    images: dict[str, np.ndarray] = field(default_factory=dict)
    view: int | None = None  # which training view the images show

    def is_finite(self) -> bool:
        """Whether the geometry is free of NaN/inf (images are uint8, always finite)."""
        arrays = [self.mesh.verts if self.mesh is not None else None, self.points.xyz if self.points else None]
        return all(np.isfinite(a).all() for a in arrays if a is not None)

    def frame(self, previous: Snapshot | None) -> Snapshot:
        """What a timelapse frame keeps: the mesh (its faces shared with `previous` when unchanged) or the render."""
        mesh = self.mesh
        if mesh is not None and previous is not None and previous.mesh is not None \
                and np.array_equal(mesh.faces, previous.mesh.faces):
            mesh = dataclasses.replace(mesh, faces=previous.mesh.faces)
        images = {"render": self.images["render"]} if "render" in self.images else {}
        return Snapshot(iteration=self.iteration, mesh=mesh, images=images, view=self.view)


@dataclass
class Result:
    """What a finished run exports, as plain data: whichever of these the method has."""

    mesh: MeshData | None = None  # the fitted surface (mesh methods), coloured
    grid: tuple[np.ndarray, np.ndarray, float] | None = None  # densities (D, D, D), colours (D, D, D, 3), extent
    splats: dict[str, np.ndarray] | None = None  # positions, colors, opacities, radii


# --- the method ----------------------------------------------------------------------------------


class Method:
    """Base class of the methods. Subclasses set the class attributes and implement step()."""

    name: ClassVar[str]  # registry key, e.g. "deform"
    title: ClassVar[str]  # shown in the page
    Config: ClassVar[type]
    tutorial: ClassVar[str]  # the PyTorch3D tutorial this method follows ("" for recon's own)
    explain: ClassVar[str] = ""  # markdown: what is optimised, what each loss term measures
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the full quality measures evaluate() returns, by key; the live estimate has the same keys under LIVE
    metrics: ClassVar[dict[str, Metric]] = {}
    #: what the live estimate measures, in words (the chart says it)
    live_note: ClassVar[str] = ""
    shows_images: ClassVar[bool] = False  # snapshots carry rendered views next to the targets
    #: preset applied when the method is chosen, by device type ("cpu" / "cuda"); none: the defaults
    device_presets: ClassVar[dict[str, str]] = {}
    #: the method fits images (a mesh target is rendered into views; an image dataset is fitted as it is)
    fits_images: ClassVar[bool] = True

    def __init__(self, target: Any, cfg: Any, device: torch.device) -> None:
        self.target = target
        self.cfg = cfg
        self.device = device
        self.optimizer: torch.optim.Optimizer | None = None
        self.iteration = 0  # steps taken
        self.generator = torch.Generator().manual_seed(int(cfg.seed))  # this run's own randomness

    # --- the loop -------------------------------------------------------------------------
    def step(self) -> dict[str, torch.Tensor]:
        """One optimisation step. Returns 0-d tensors: each unweighted term and ``total``."""
        raise NotImplementedError

    def finish_step(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The end of every step: weighted total, backward, optimiser step; the terms and total, detached.

        Loss keys equal the stems of their weight fields (``chamfer`` <-> ``chamfer_weight``).
        """
        total = sum(getattr(self.cfg, f"{key}_weight") * value for key, value in terms.items())
        total.backward()
        self.after_backward()
        self.optimizer.step()
        self.iteration += 1
        return {**{k: v.detach() for k, v in terms.items()}, "total": total.detach()}

    def blew_up(self, exc: BaseException) -> bool:
        """Whether `exc` comes from parameters that blew up: non-finite or huge (float32 products of three
        numbers past 1e12, areas and volumes, overflow), or an error saying so."""
        if re.search(r"\b(nan|inf|infinity)\b", str(exc), re.IGNORECASE):
            return True
        params = [p for g in self.optimizer.param_groups for p in g["params"]] if self.optimizer is not None else []
        with torch.no_grad():
            return any(not bool((p.abs() < 1e12).all()) for p in params)  # False for NaN too

    def after_backward(self) -> None:
        """Hook between backward and the optimiser step (e.g. density control reading gradients)."""

    def evaluate(self, live: bool = False) -> dict[str, float]:
        """Held-out quality by key of :attr:`metrics`: the full score, or with `live` a cheap estimate of it."""
        return {}

    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    # --- results (called after the run has ended, from one thread at a time) ----------------
    def result(self) -> Result:
        """The fitted model as plain data for the exports."""
        return Result()

    def turntable(self, frames: int = 36, size: int = 128) -> list[np.ndarray]:
        """uint8 (size, size, 3) renders of the result from cameras circling it; [] if unsupported."""
        return []

    # --- optimiser and live edits -------------------------------------------------------------
    @staticmethod
    def make_optimizer(params: list[torch.Tensor] | list[dict], cfg: Any) -> torch.optim.Optimizer:
        """Adam, or SGD with momentum where the config chooses it (the mesh tutorials' optimiser)."""
        if getattr(cfg, "optimizer", "adam") == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        return torch.optim.Adam(params, lr=cfg.lr)

    def apply_live(self, changes: dict[str, Any]) -> None:
        """Apply new values of live knobs (weights, learning rates) from the next step on."""
        self.cfg = dataclasses.replace(self.cfg, **changes)
        if "lr" in changes:
            self.set_lr(changes["lr"])

    def set_lr(self, lr: float) -> None:
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    # --- cost -------------------------------------------------------------------------------
    @classmethod
    def estimate(cls, cfg: Any, device: torch.device | str = "cpu") -> Any:
        """The price of a run of `cfg` on `device` (:class:`recon.cost.Estimate`), before any work."""
        return estimate(cls.name, cfg, torch.device(device))
