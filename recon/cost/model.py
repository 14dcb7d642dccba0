"""The cost model: the price of a run from its config alone (peak memory and time).

Every method's run is priced from its config alone (:func:`estimate`, also ``Method.estimate``): the
config gives a few named quantities (the *drivers*: "ray samples per step", "grid voxels", "target
pixels", ...) and one small linear model per method turns them into bytes and seconds. A run whose
price exceeds what the server allows is refused before any work (:func:`fits`), with a message
naming the settings that cost most and values that would fit (:func:`advice`).

The model of a method
---------------------
A run goes through phases whose big tensors do not overlap: the setup (rendering the target views:
the soft silhouettes keep 50 faces per pixel of every view in flight), the steps (the autograd graph
of one step, on top of what the setup left: target images, parameters, optimiser state) and the
evaluations and snapshots (no gradients, rendered in chunks). The memory of each phase is linear in
its drivers, and the run's peak is the largest of them::

    memory = max over phases p of ( a_p + sum_i b_p,i * driver_p,i )

Seconds are linear in the drivers too: the setup's, each step's (averaged over the coarse and fine
phases of coarse-to-fine schedules) and the final full evaluation's::

    total = setup + iterations * step * (1 + EXTRAS) + evaluation

Drivers are chosen from the tensors that dominate (read from the methods' code), so that the model
extrapolates from the small calibrated sizes to the sliders' maxima:

- volume: grid voxels (parameters, gradients, Adam state, sigmoid copies), grid voxels x views per
  step (``grid_sample``'s backward writes a full gradient grid for every view of the expanded
  batch), ray samples per step (the renderer's activations, forward and backward), target pixels
  (the training images) and the pixels rendered at once when the targets are made (50-face soft
  silhouettes); samples rendered at once without gradients (evaluation and snapshot chunks).
- nerf: per step, ray samples x hidden width (the MLP's activations) and x embedding width (the
  harmonic embedding, 6 x harmonic functions); network multiply-adds for time; samples per network
  call in the live estimate (all at once), the full evaluation and snapshots (in chunks).
- textured_mesh: fragments per step (views x size^2 x faces per pixel: the soft rasteriser's
  outputs and the Phong shader's per-fragment colours and their gradients), faces x views (the tiled
  rasteriser copies every face into the tiles it touches), tiles per step (time), sphere faces.
- deform: sphere vertices, points per surface (memory) and point pairs (points^2: the exhaustive
  nearest-neighbour search of the Chamfer loss on a CPU, time).
- splats: splats x views per step (pulsar keeps one native renderer per view of the batch, each with
  per-splat buffers, and every view projects and sorts every splat), pixels per step (each renderer's
  image and per-pixel bookkeeping, the loss) and splats x pixels per step (time: pulsar checks every
  splat against every block of pixels), the splats (parameters, gradients, Adam state, density
  statistics) at the largest count the run can reach (``max_splats`` caps density control's growth;
  steps before the first refinement are priced at the initial count); the setup's carving (candidate
  points x training views, projected and sampled; for memory only beyond what fits in the memory the
  target render left allocated) and nearest-neighbour radii (splat pairs: an exhaustive search on a
  CPU, time); the evaluation's held-out renders (splat-views at 128 px).

The target is assumed to be the size of the built-in cow (about 6k faces); an image dataset skips
the target render, so it is priced a little high.

Calibration
-----------
``python -m recon.cost --calibrate [--quick] [--jobs 2]`` runs every calibration config
(:data:`CALIBRATION`) in a fresh subprocess (``--measure``): it loads the cow and imports everything,
records the resident memory, then samples it while it builds the method (the views cache cleared,
so the targets are rendered), takes a few steps, one live and one full evaluation and one snapshot,
and reports each phase's peak growth (the kernel's high-water mark, reset between phases, and a
2 ms sampler) and seconds. Then it times every config again, one at a time in one process
(``--rounds``; the fastest try counts). It fits every coefficient by non-negative least squares on
the relative error, maps the seconds to the quiet machine (below), and prints the coefficients (to
paste into :data:`COEFFICIENTS` and :data:`QUIET_FACTORS`) and the measured-vs-estimated tables.

Seconds on a shared machine: the calibration machine (2 vCPUs) was shared with other people's work
(load average 2.6-7.8 while measuring), which slowed steps 3-10x, small steps the most. So the
seconds are fitted there for their shape (how they grow with each driver) and then mapped, per
method, onto the quiet machine's benchmark of the Tutorial and default presets
(``bench_results/bench.json``, load 1-2): ``step = const + scale x (fitted step - fitted const)``
solved from the two presets (:func:`quiet_factors`). Memory does not depend on the load.

CUDA: not calibrated on a GPU (none was available): memory uses the same coefficients (bytes are
bytes; the CPU process's constant overhead is kept, which only errs high), seconds are the CPU
model's times :data:`CUDA_SPEED` (a GPU assumed only 10x faster than the 2-core CPU they were measured
on; real GPUs are usually faster still, so the time estimate errs high).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .fitted import COEFFICIENTS

# --- constants of the methods (duplicated here: this module must not import recon.methods) ----------

EVAL_SIZE = 128  # recon.targets.EVAL_SIZE: side of the held-out images
HELDOUT_VIEWS = 5  # recon.targets.ViewSettings.heldout_views
RENDER_AT_ONCE = 8  # recon.targets._render: chunks of 4 views on 2 threads
CHUNK_SAMPLES = 1 << 20  # recon.methods.volumetric.CHUNK_SAMPLES
LIVE_RAYS = 2048  # recon.methods.volumetric.LIVE_RAYS
NET_CHUNK = 1 << 18  # recon.methods.nerf.NET_CHUNK
NERF_DISPLAY = 32  # Nerf.display_resolution
TILE = 16  # recon.render.TILE
CARVE_BATCH = 4096  # recon.splatting.init_splats: the fewest candidate points of a carving round
#: Candidate points x views of a carving round whose arrays fit in the memory the target render left
#: allocated (measured: the setup's peak grows ~75 bytes per candidate-view beyond about this, hardly below).
CARVE_REUSED = 4_000_000

#: The share of a run's time the runner spends on live estimates and snapshots (recon.budget).
EXTRAS = 0.10
#: Seconds on a CUDA device = CPU seconds x this (conservative: a GPU assumed only 10x faster).
CUDA_SPEED = 0.1

# --- the estimate ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """The price of one run: its peak memory and its time, and the quantities they were computed from."""

    memory_bytes: float  # peak growth of the process (CPU), or the peak CUDA allocation (GPU)
    setup_seconds: float  # building the method: rendering the target views, the model
    seconds_per_step: float  # mean over the run (coarse and fine phases)
    iterations: int
    total_seconds: float  # setup + iterations x step x (1 + EXTRAS) + the final full evaluation
    drivers: dict[str, float] = field(default_factory=dict)  # the named quantities the model multiplies
    evaluation_seconds: float = 0.0  # the final full evaluation

    def describe(self) -> str:
        """E.g. "about 2 min · 0.7 GB"."""
        return f"about {human_seconds(self.total_seconds)} · {human_bytes(self.memory_bytes)}"


def human_bytes(n: float) -> str:
    """Bytes in the unit a person reads at a glance: "35 MB", "0.7 GB", "68 GB", "2.5 TB"."""
    if n >= 1e12:
        return f"{n / 1e12:.1f} TB"
    if n >= 1e10:
        return f"{n / 1e9:.0f} GB"
    if n >= 1e8:
        return f"{n / 1e9:.1f} GB"
    return f"{max(n, 0) / 1e6:.0f} MB"


def human_seconds(s: float) -> str:
    """Seconds in the unit a person reads at a glance: "40 s", "2 min", "3.5 h", "40 days"."""
    if s < 60:
        return f"{max(s, 1):.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h" if s < 36000 else f"{s / 3600:.0f} h"
    if s < 2 * 365 * 86400:
        return f"{s / 86400:.0f} days"
    return f"{s / (365 * 86400):.0f} years"


@dataclass
class Workload:
    """What a config asks of the machine, phase by phase, as named drivers."""

    setup: dict[str, float]
    steps: list[tuple[int, dict[str, float]]]  # (iterations in this phase, its step's drivers)
    evaluate: dict[str, float]  # the evaluations and snapshots (memory); the final full evaluation (time)


def _views_count(cfg: Any) -> tuple[int, int]:
    n = int(cfg.num_views)
    return n, min(int(cfg.views_per_step), n)


def _target_setup(cfg: Any) -> dict[str, float]:
    """The target render of every image method: the training views at the image size."""
    n, s = int(cfg.num_views), int(cfg.image_size)
    return {"training views": n, "target pixels": n * s * s,
            "pixels rendered at once (targets)": min(n, RENDER_AT_ONCE) * s * s}


def _volume(cfg: Any, full: bool = True) -> Workload:
    n, b = _views_count(cfg)
    d, s, p = int(cfg.grid_size), int(cfg.image_size), int(cfg.points_per_ray)
    dc = int(cfg.coarse_grid) if 0 < cfg.coarse_grid < d else d
    sc = int(cfg.coarse_image_size) if 0 < cfg.coarse_image_size < s else s
    it = int(cfg.iterations)
    coarse = min(it, round(cfg.grow_at * it)) if (dc < d or sc < s) else 0
    target = _target_setup(cfg)

    def step(grid: int, size: int) -> dict[str, float]:
        samples = b * size * size * p
        # a sample's trilinear lookups (and their gradients) miss the caches more on a bigger grid
        return {"target pixels": target["target pixels"], "grid voxels": grid ** 3,
                "grid voxels x views per step": b * grid ** 3, "ray samples per step": samples,
                "ray samples x grid side": samples * grid}

    eval_cams = min(HELDOUT_VIEWS, max(1, CHUNK_SAMPLES // (EVAL_SIZE ** 2 * p)))
    at_once = max(eval_cams * EVAL_SIZE ** 2 * p * full, s * s * p, (LIVE_RAYS // HELDOUT_VIEWS) * HELDOUT_VIEWS * p)
    evaluate = {"target pixels": target["target pixels"], "grid voxels": d ** 3,
                "samples rendered at once (no grad)": at_once,
                "evaluation samples": HELDOUT_VIEWS * EVAL_SIZE ** 2 * p,
                "evaluation samples x grid side": HELDOUT_VIEWS * EVAL_SIZE ** 2 * p * d}
    steps = [(coarse, step(dc, sc)), (it - coarse, step(d, s))] if coarse else [(it, step(d, s))]
    return Workload({**target, "grid voxels": dc ** 3}, steps, evaluate)


def _nerf(cfg: Any, full: bool = True) -> Workload:
    n, b = _views_count(cfg)
    s, p, h = int(cfg.image_size), int(cfg.points_per_ray), int(cfg.hidden)
    e = 6 * int(cfg.harmonic_functions)  # sin and cos of x, y, z at every frequency
    macs = e * h + 2 * h * h + 4 * h  # multiply-adds per sample (the direction's part is per ray)
    samples = b * int(cfg.rays_per_image) * p
    target = _target_setup(cfg)
    step = {"target pixels": target["target pixels"], "ray samples per step": samples,
            "hidden activations per step": samples * h, "embedding values per step": samples * e,
            "network multiply-adds per step": samples * macs}
    live = (LIVE_RAYS // HELDOUT_VIEWS) * HELDOUT_VIEWS * p  # the live estimate: one call, all at once

    def chunked(size: int, cams: int) -> tuple[int, int]:
        """(samples in flight for one camera chunk, samples per network call) of a chunked render."""
        cams = min(cams, max(1, CHUNK_SAMPLES // (size * size * p)))
        in_flight = cams * size * size * p
        return in_flight, min(in_flight, max(1, NET_CHUNK // p) * p)

    whole, snap = chunked(EVAL_SIZE, HELDOUT_VIEWS) if full else (0, 0), chunked(s, 1)
    per_call = max(live, whole[1], snap[1], NERF_DISPLAY ** 3)
    eval_samples = HELDOUT_VIEWS * EVAL_SIZE ** 2 * p
    # Without gradients a layer's input and output are alive together: the embedding (computed in
    # two steps), embedding + first layer, or the colour head's features, product and sum.
    evaluate = {"target pixels": target["target pixels"], "samples rendered at once (no grad)": max(whole[0], snap[0]),
                "network values per call (no grad)": per_call * max(2 * e, e + h, 3 * h),
                "evaluation samples": eval_samples, "evaluation multiply-adds": eval_samples * macs}
    return Workload(target, [(int(cfg.iterations), step)], evaluate)


def _sphere(level: int) -> tuple[int, int]:
    """(vertices, faces) of an ico-sphere of subdivision `level`."""
    return 10 * 4 ** level + 2, 20 * 4 ** level


def _textured_mesh(cfg: Any, full: bool = True) -> Workload:
    n, b = _views_count(cfg)
    s, k = int(cfg.image_size), int(cfg.faces_per_pixel)
    verts, faces = _sphere(int(cfg.sphere_level))
    it = int(cfg.iterations)
    coarse = min(it, math.ceil(cfg.coarse_fraction * it)) if s >= 64 and cfg.coarse_fraction > 0 else 0
    shaded = 0 if cfg.silhouette_only else 1
    target = _target_setup(cfg)

    def step(size: int) -> dict[str, float]:
        frags = b * size * size * k
        return {"target pixels": target["target pixels"], "sphere faces": faces, "fragments per step": frags,
                "shaded fragments per step": shaded * frags, "faces x views per step": b * faces,
                "tiles per step": b * math.ceil(size / TILE) ** 2}

    evaluate = {"target pixels": target["target pixels"], "sphere faces": faces,
                "fragments rendered at once (no grad)": s * s * k}
    steps = [(coarse, step(s // 2)), (it - coarse, step(s))] if coarse else [(it, step(s))]
    return Workload(target, steps, evaluate)


def _deform(cfg: Any, full: bool = True) -> Workload:
    verts, faces = _sphere(int(cfg.sphere_level))
    it = int(cfg.iterations)
    coarse = min(it, math.ceil(cfg.coarse_fraction * max(it - 1, 1))) if cfg.coarse_fraction > 0 else 0

    def step(points: int) -> dict[str, float]:
        return {"sphere vertices": verts, "points per surface": points, "point pairs per step": points * points}

    steps = [(coarse, step(int(cfg.coarse_points))), (it - coarse, step(int(cfg.points)))] if coarse else \
        [(it, step(int(cfg.points)))]
    return Workload({"sphere vertices": verts}, steps, {"sphere vertices": verts})


def _first_refinement(cfg: Any) -> int | None:
    """The first step at which splats' density control runs (recon.splatting's ``DensityController.due``),
    or None if it never does within the run."""
    every, start, stop = int(cfg.refine_every), int(cfg.refine_start), int(cfg.refine_stop)
    if every <= 0:
        return None
    first = -(-start // every) * every
    return first if first <= stop and first < int(cfg.iterations) else None


def _splats(cfg: Any, full: bool = True) -> Workload:
    n, b = _views_count(cfg)
    s, it, start = int(cfg.image_size), int(cfg.iterations), int(cfg.num_splats)
    first = _first_refinement(cfg)
    most = start if first is None else max(start, int(cfg.max_splats))  # growth is capped at max_splats
    carved = cfg.init == "carved"
    target = _target_setup(cfg)
    # carving draws max(4n, 4096) candidates per round and projects them into every training view
    carving = carved * max(4 * start, CARVE_BATCH) * n
    setup = {**target, "carving points x training views": carving,
             "carving points x training views beyond the reused": max(0, carving - CARVE_REUSED),
             "splat pairs (init)": start * start}

    def step(count: int) -> dict[str, float]:
        return {"target pixels": target["target pixels"], "splats": count, "splats x views per step": b * count,
                "pixels per step": b * s * s, "splats x pixels per step": b * s * s * count}

    steps = [(first, step(start)), (it - first, step(most))] if first else [(it, step(most))]
    # evaluation (live = full): the held-out views at once; the training renderers' buffers stay allocated
    evaluate = {"target pixels": target["target pixels"], "splats": most, "splats x views per step": b * most,
                "pixels per step": b * s * s, "evaluation splat-views": HELDOUT_VIEWS * most}
    return Workload(setup, steps, evaluate)


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "volume": _volume, "nerf": _nerf, "textured_mesh": _textured_mesh, "deform": _deform, "splats": _splats}


def workload(method: str, cfg: Any, full: bool = True) -> Workload:
    """The drivers of a run of `method` with `cfg` (`full`: with the final full evaluation)."""
    if method not in WORKLOADS:
        raise KeyError(f"no cost model for method {method!r}; priced methods are {', '.join(WORKLOADS)}")
    return WORKLOADS[method](cfg, full)


def _linear(coef: dict[str, float], drivers: dict[str, float]) -> float:
    return coef.get("const", 0.0) + sum(c * drivers.get(name, 0.0) for name, c in coef.items() if name != "const")


def phase_memory(method: str, cfg: Any, coefficients: dict | None = None, full: bool = True) -> dict[str, float]:
    """Predicted peak growth (bytes) of each phase: setup, step, evaluate (`full`: with the full evaluation)."""
    coef = (coefficients or COEFFICIENTS)[method]["memory"]
    w = workload(method, cfg, full)
    return {"setup": _linear(coef["setup"], w.setup),
            "step": max(_linear(coef["step"], d) for count, d in w.steps if count > 0),
            "evaluate": _linear(coef["evaluate"], w.evaluate)}


def estimate(method: str, cfg: Any, device: torch.device | str = "cpu", coefficients: dict | None = None) -> Estimate:
    """The price of a run of `method` with `cfg` on `device`, from the config alone (no work done)."""
    device = torch.device(device)
    coef = (coefficients or COEFFICIENTS)[method]
    w = workload(method, cfg)
    memory = max(phase_memory(method, cfg, coefficients).values())
    sec = coef["seconds"]
    setup = max(_linear(sec["setup"], w.setup), 0.0)
    it = max(sum(count for count, _ in w.steps), 1)
    step = sum(count * max(_linear(sec["step"], d), 0.0) for count, d in w.steps) / it
    evaluation = max(_linear(sec["evaluate"], w.evaluate), 0.0)
    if device.type == "cuda":
        setup, step, evaluation = setup * CUDA_SPEED, step * CUDA_SPEED, evaluation * CUDA_SPEED
    total = setup + int(cfg.iterations) * step * (1 + EXTRAS) + evaluation
    drivers = {**w.setup, **max(w.steps, key=lambda cd: _linear(coef["memory"]["step"], cd[1]))[1], **w.evaluate}
    return Estimate(memory_bytes=float(memory), setup_seconds=float(setup), seconds_per_step=float(step),
                    iterations=int(cfg.iterations), total_seconds=float(total), drivers=drivers,
                    evaluation_seconds=float(evaluation))


