"""Mesh deformation: an ico-sphere deformed into the target by a Chamfer loss.

Follows the PyTorch3D tutorial ``deform_source_mesh_to_target_mesh``: the offsets of every sphere
vertex are the parameters; each step samples points on both surfaces, measures their Chamfer
distance and adds three regularisers that keep the mesh well shaped (edge length, normal
consistency, uniform Laplacian smoothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from pytorch3d.loss import chamfer_distance, mesh_edge_loss, mesh_laplacian_smoothing, mesh_normal_consistency
from pytorch3d.ops import sample_points_from_meshes
from pytorch3d.utils import ico_sphere

from ..metrics import Metric
from ..params import knob
from ..render import mesh_turntable
from ..worker import derive_seed, seeded
from .base import ITERATIONS_HELP, MeshData, Method, Result, Snapshot


@dataclass
class DeformConfig:
    chamfer_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Chamfer weight", group="Loss weights", live=True,
                                 help="Pulls the sampled surface points onto the target's. Too low: the sphere barely moves; "
                                      "too high relative to the regularisers: spiky, tangled faces.")
    edge_weight: float = knob(1.0, 0.0, 10.0, step=0.01, label="Edge-length weight", group="Loss weights", live=True,
                              help="Penalises long edges so the triangles stay even. Too low: stretched, uneven faces; "
                                   "too high: the mesh shrinks and cannot reach thin parts.")
    normal_weight: float = knob(0.01, 0.0, 1.0, step=0.001, label="Normal-consistency weight", group="Loss weights",
                                live=True,
                                help="Makes neighbouring faces point the same way. Too low: creases and flipped faces; "
                                     "too high: everything is rounded off.")
    laplacian_weight: float = knob(0.1, 0.0, 10.0, step=0.01, label="Laplacian weight", group="Loss weights", live=True,
                                   help="Pulls each vertex towards the mean of its neighbours (smoothness). Too low: noisy, "
                                        "self-intersecting surface; too high: a blob that loses ears and legs.")
    lr: float = knob(1.0, 1e-4, 5.0, step=1e-4, label="Learning rate", group="Optimiser", live=True, log=True,
                     help="Step size. Too low: slow convergence; too high: the loss oscillates or explodes (NaN).")
    momentum: float = knob(0.9, 0.0, 0.99, step=0.01, label="Momentum (SGD)", group="Optimiser",
                           help="SGD momentum, as in the tutorial (ignored by Adam). Too low: slow, jittery progress; "
                                "too high: overshoots and oscillates.")
    optimizer: str = knob("sgd", choices=("sgd", "adam"), label="Optimiser", group="Optimiser",
                          help="SGD with momentum is the tutorial's choice; Adam adapts the step per vertex "
                               "(use a learning rate around 0.01).")
    iterations: int = knob(2000, 1, 20000, label="Iterations", group="Run",
                           help=ITERATIONS_HELP)
    points: int = knob(5000, 100, 50000, step=100, label="Points sampled per surface", group="Sampling",
                       help="Points drawn from each surface every step for the Chamfer loss. Fewer: faster but noisier "
                            "steps; more: smoother steps, slower (the nearest-neighbour search grows quadratically).")
    coarse_points: int = knob(5000, 100, 50000, step=100, label="Points in the coarse phase", group="Sampling",
                              help="Points per surface during the first part of the run (coarse to fine). Few points make "
                                   "cheap, noisy steps that get the overall shape fast; the fine phase then uses 'Points "
                                   "sampled per surface'. Equal to it: no coarse phase (the tutorial).")
    coarse_fraction: float = knob(0.0, 0.0, 1.0, step=0.05, label="Coarse phase (fraction of iterations)",
                                  group="Sampling",
                                  help="Share of the iterations sampled with the coarse point count. 0: the tutorial's "
                                       "fixed count throughout; too high: little time left to remove the noise.")
    lr_decay: float = knob(1.0, 0.01, 1.0, step=0.01, label="Final learning-rate factor", group="Optimiser",
                           help="The learning rate follows a cosine from its value down to this fraction of it at the "
                                "last iteration. 1: constant (the tutorial). Lower settles the noisy sampled gradients "
                                "into a finer fit at the end; too low stops the mesh moving early.")
    sphere_level: int = knob(4, 1, 6, label="Ico-sphere level", group="Source mesh",
                             help="Subdivision level of the starting sphere: level 4 has 2562 vertices, each level "
                                  "about 4x more. Too low: too few vertices for ears and legs; too high: finer detail but much "
                                  "slower steps.")
    seed: int = knob(0, 0, 2**31 - 1, label="Seed", group="Run",
                     help="Random seed of the point sampling; the same seed and settings repeat a run.")


#: Points per surface for the quality metric (the benchmark's Chamfer distance), and for its live estimate.
EVAL_POINTS = 10_000
LIVE_POINTS = 2_000


def eval_points(meshes, n: int = EVAL_POINTS, seed: int = 1234) -> torch.Tensor:
    """`n` points sampled on `meshes` with a fixed seed, leaving the global RNG untouched."""
    with seeded(seed, meshes.device):
        return sample_points_from_meshes(meshes, n)  # (1, n, 3)


class Deform(Method):
    name = "deform"
    title = "Mesh deformation (Chamfer)"
    Config = DeformConfig
    tutorial = "deform_source_mesh_to_target_mesh"
    metrics = {"chamfer_10k": Metric("Chamfer (10k points)", "Chamfer", False, log_axis=True)}
    live_note = f"{LIVE_POINTS:,} points a side"
    fits_images = False
    explain = (
        "**What is optimised:** an offset for every vertex of an ico-sphere.\n\n"
        "**Loss terms:** *Chamfer* is the mean squared distance from points sampled on each surface to the "
        "nearest point sampled on the other; *edge* is the mean squared edge length; *normal* is one minus "
        "the cosine between neighbouring face normals; *laplacian* is the distance of each vertex from the "
        "mean of its neighbours.\n\n"
        "**Quality:** Chamfer distance with 10,000 points on each surface (lower is better)."
    )
    device_presets = {"cpu": "Fast", "cuda": "Fast"}
    presets = {
        # recon's default (the page and the CLI start with it). Measured on the 2-core CPU (cow, Chamfer with
        # 10k points): the tutorial's SGD reaches 0.0025 after 400 iterations (~80 s) and 0.00083 after its
        # 2000 (~400 s). Most of a step is the nearest-neighbour search, quadratic in the points sampled: with
        # 1000 points a step costs ~0.02 s instead of ~0.2 s, and Adam at lr 0.01 makes each cheap step count:
        # 0.00084 after 10 s, where SGD with 1000 points had 0.0015. The last 15% of the iterations sample
        # the tutorial's 5000 points to take out the sampling noise: 0.00073 at the end (~70 s).
        "Fast": dict(optimizer="adam", lr=0.01, coarse_points=1000, coarse_fraction=0.85, points=5000,
                     iterations=1500),
        "Tutorial": dict(chamfer_weight=1.0, edge_weight=1.0, normal_weight=0.01, laplacian_weight=0.1, lr=1.0,
                         momentum=0.9, optimizer="sgd", iterations=2000, points=5000, coarse_points=5000,
                         coarse_fraction=0.0, lr_decay=1.0, sphere_level=4),
        "No regularisers (tangles)": dict(chamfer_weight=1.0, edge_weight=0.0, normal_weight=0.0, laplacian_weight=0.0,
                                          lr=1.0, momentum=0.9, optimizer="sgd", iterations=2000, points=5000,
                                          sphere_level=4),
    }

    def __init__(self, target, cfg: DeformConfig, device: torch.device) -> None:
        super().__init__(target, cfg, device)
        self.target_mesh = target.meshes(device)
        self.src = ico_sphere(cfg.sphere_level, device)
        # Topology never changes: compute edges and the Laplacian once; every offset mesh clones them.
        self.src.edges_packed()
        self.src.faces_packed_to_edges_packed()
        self.src.laplacian_packed()
        self.offsets = torch.zeros_like(self.src.verts_packed(), requires_grad=True)  # (V, 3)
        self.optimizer = self.make_optimizer([self.offsets], cfg)
        self._eval_targets: dict[int, torch.Tensor] = {}  # target points by count

    def current_mesh(self):
        return self.src.offset_verts(self.offsets)

    def step(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        progress = self.iteration / max(cfg.iterations - 1, 1)  # 0 at the first step, 1 at the last
        # Cosine from lr to lr * lr_decay; cfg.lr may be edited live, so it is re-read every step.
        self.set_lr(cfg.lr * (cfg.lr_decay + (1 - cfg.lr_decay) * 0.5 * (1 + math.cos(math.pi * progress))))
        points = cfg.coarse_points if progress < cfg.coarse_fraction else cfg.points
        self.optimizer.zero_grad(set_to_none=True)
        mesh = self.current_mesh()
        with seeded(derive_seed(cfg.seed, self.iteration), self.device):  # this run's draws, whatever else runs
            sample_trg = sample_points_from_meshes(self.target_mesh, points)  # (1, P, 3)
            sample_src = sample_points_from_meshes(mesh, points)  # (1, P, 3)
        terms = {
            "chamfer": chamfer_distance(sample_trg, sample_src)[0],
            "edge": mesh_edge_loss(mesh),
            "normal": mesh_normal_consistency(mesh),
            "laplacian": mesh_laplacian_smoothing(mesh, method="uniform"),
        }
        return self.finish_step(terms)

    @torch.no_grad()
    def evaluate(self, live: bool = False) -> dict[str, float]:
        n = LIVE_POINTS if live else EVAL_POINTS
        if n not in self._eval_targets:
            self._eval_targets[n] = eval_points(self.target_mesh, n)
        src = eval_points(self.current_mesh(), n, seed=4321)
        return {"chamfer_10k": float(chamfer_distance(self._eval_targets[n], src)[0])}

    @torch.no_grad()
    def snapshot(self) -> Snapshot:
        mesh = self.current_mesh()
        return Snapshot(
            iteration=-1,
            mesh=MeshData(verts=mesh.verts_packed().float().cpu().numpy(),
                          faces=mesh.faces_packed().cpu().numpy().astype(np.int64)),
        )

    @torch.no_grad()
    def result(self) -> Result:
        """The deformed mesh (no colours: the export takes them from the target)."""
        return Result(mesh=self.snapshot().mesh)

    @torch.no_grad()
    def turntable(self, frames: int = 36, size: int = 128) -> list[np.ndarray]:
        """The fitted mesh, plain shaded (deformation fits no colours), from cameras circling it."""
        mesh = self.current_mesh()
        return mesh_turntable(mesh.verts_packed(), mesh.faces_packed(), None, frames=frames, size=size)
