"""The price of a run before it starts: peak memory and time, from a cost model calibrated by measurement.

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

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

# --- constants of the methods (duplicated here: this module must not import recon.methods) ----------

EVAL_SIZE = 128  # recon.targets.EVAL_SIZE: side of the held-out images
HELDOUT_VIEWS = 5  # recon.targets.ViewSettings.heldout_views
RENDER_AT_ONCE = 8  # recon.targets._render: chunks of 4 views on 2 threads
CHUNK_SAMPLES = 1 << 20  # recon.methods.volumetric.CHUNK_SAMPLES
LIVE_RAYS = 2048  # recon.methods.volumetric.LIVE_RAYS
NET_CHUNK = 1 << 18  # recon.methods.nerf.NET_CHUNK
NERF_DISPLAY = 32  # Nerf.display_resolution
TILE = 16  # recon.render.TILE

#: The share of a run's time the runner spends on live estimates and snapshots (recon.budget).
EXTRAS = 0.10
#: Per method, how the seconds fitted on the shared machine map to the quiet one (:func:`quiet_factors`):
#: step = const + scale x (fitted step - loaded_const); setup x setup. Fitted with COEFFICIENTS.
QUIET_FACTORS: dict[str, dict[str, float]] = {
    'deform': {
        'scale': 0.2108,
        'const': 0,
        'loaded_const': 0.001766,
        'setup': 6.598},
    'textured_mesh': {
        'scale': 0.6032,
        'const': 0.0414,
        'loaded_const': 1.612,
        'setup': 0.6863},
    'volume': {
        'scale': 0.6729,
        'const': 0,
        'loaded_const': 0.01007,
        'setup': 0.6863},
    'nerf': {
        'scale': 0.2734,
        'const': 0,
        'loaded_const': 0.1161,
        'setup': 0.6863}}
#: Seconds on a CUDA device = CPU seconds x this (conservative: a GPU assumed only 10x faster).
CUDA_SPEED = 0.1

# --- the fitted coefficients ---------------------------------------------------------------------------
# Fitted on 2026-11-30 by `python -m recon.cost --calibrate --jobs 2` (which reproduces them; see the
# module docstring) on the project's CPU machine: 2 vCPUs (Intel Xeon, 2 torch threads), 24 GB, torch
# 2.11.0 (CPU), PyTorch3D 0.7.9, Python 3.11, target the built-in cow. 38 configs, each in a fresh
# process; memory: the peak growth of the resident set over the process's after imports and loading
# the cow, per phase; seconds: the fastest of 2-3 tries at load average 2.6-7.8, mapped to the quiet
# machine by QUIET_FACTORS (the benchmark of 2026-11-21). Units: bytes, seconds, per unit of each
# driver ("const": per run). Every config's peak memory is estimated within 0.89-1.19x of measured.
COEFFICIENTS: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    'volume': {
        'memory': {
            'setup': {
                'const': 3.698e+08,
                'grid voxels': 4.559,
                'pixels rendered at once (targets)': 2022,
                'target pixels': 45.03},
            'step': {
                'const': 2.548e+08,
                'target pixels': 27.07,
                'grid voxels': 79.63,
                'grid voxels x views per step': 14.17,
                'ray samples per step': 72.69},
            'evaluate': {
                'const': 2.859e+08,
                'target pixels': 27.17,
                'grid voxels': 75.84,
                'samples rendered at once (no grad)': 39.69}},
        'seconds': {
            'setup': {
                'const': 1.856,
                'training views': 0.1118,
                'target pixels': 5.009e-06},
            'step': {
                'const': 0,
                'ray samples per step': 1.643e-07,
                'ray samples x grid side': 0,
                'grid voxels': 1.193e-08,
                'grid voxels x views per step': 2.055e-08},
            'evaluate': {
                'const': 0,
                'evaluation samples': 4.776e-08,
                'evaluation samples x grid side': 5.393e-10,
                'grid voxels': 1.524e-08}}},
    'nerf': {
        'memory': {
            'setup': {
                'const': 3.698e+08,
                'pixels rendered at once (targets)': 2022,
                'target pixels': 45.03},
            'step': {
                'const': 2.386e+08,
                'target pixels': 0,
                'ray samples per step': 153.2,
                'hidden activations per step': 26.41,
                'embedding values per step': 5.571},
            'evaluate': {
                'const': 3.577e+08,
                'target pixels': 0,
                'samples rendered at once (no grad)': 20.16,
                'network values per call (no grad)': 3.775}},
        'seconds': {
            'setup': {
                'const': 1.856,
                'training views': 0.1118,
                'target pixels': 5.009e-06},
            'step': {
                'const': 0,
                'ray samples per step': 9.552e-07,
                'embedding values per step': 7.935e-09,
                'network multiply-adds per step': 4.502e-11},
            'evaluate': {
                'const': 0,
                'evaluation samples': 6.557e-07,
                'evaluation multiply-adds': 2.525e-11}}},
    'textured_mesh': {
        'memory': {
            'setup': {
                'const': 3.698e+08,
                'pixels rendered at once (targets)': 2022,
                'target pixels': 45.03},
            'step': {
                'const': 1.78e+08,
                'target pixels': 236.3,
                'sphere faces': 539.1,
                'fragments per step': 78.95,
                'shaded fragments per step': 610.4,
                'faces x views per step': 866.6},
            'evaluate': {
                'const': 2.013e+08,
                'target pixels': 257.2,
                'sphere faces': 3829,
                'fragments rendered at once (no grad)': 207.5}},
        'seconds': {
            'setup': {
                'const': 1.856,
                'training views': 0.1118,
                'target pixels': 5.009e-06},
            'step': {
                'const': 0.0414,
                'fragments per step': 5.935e-06,
                'shaded fragments per step': 0,
                'faces x views per step': 2.781e-05,
                'tiles per step': 0},
            'evaluate': {
                'const': 0.5559,
                'sphere faces': 9.139e-05}}},
    'deform': {
        'memory': {
            'setup': {
                'const': 1.274e+08,
                'sphere vertices': 420.7},
            'step': {
                'const': 1.335e+08,
                'sphere vertices': 3083,
                'points per surface': 136},
            'evaluate': {
                'const': 1.357e+08,
                'sphere vertices': 2921}},
        'seconds': {
            'setup': {
                'const': 0.2133,
                'sphere vertices': 0.0002646},
            'step': {
                'const': 0,
                'sphere vertices': 6.849e-06,
                'points per surface': 2.126e-05,
                'point pairs per step': 6.99e-10},
            'evaluate': {
                'const': 0.1948,
                'sphere vertices': 1.161e-06}}}}


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


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "volume": _volume, "nerf": _nerf, "textured_mesh": _textured_mesh, "deform": _deform}


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


# --- refusing, and what would fit --------------------------------------------------------------------------


def fits(est: Estimate, memory_budget_bytes: float | None, seconds_budget: float | None) -> bool:
    """Whether a run priced `est` stays within the budgets (None: no limit)."""
    return ((memory_budget_bytes is None or est.memory_bytes <= memory_budget_bytes)
            and (seconds_budget is None or est.total_seconds <= seconds_budget))


def _knobs(cfg: Any, knob_lookup: Any = None) -> list[Any]:
    if knob_lookup is not None:
        return list(knob_lookup(type(cfg)) if callable(knob_lookup) else knob_lookup)
    from .params import knobs  # recon.params imports nothing from recon

    return knobs(type(cfg))


def _short(label: str) -> str:
    """ "Grid size (voxels per side)" -> "grid size"."""
    label = label.split("(")[0].strip()
    return label[:1].lower() + label[1:] if not label[:2].isupper() else label


def _fmt(value: float, kind: str) -> str:
    return f"{int(value)}" if kind == "int" else f"{value:g}"


def _largest_fitting(k: Any, cfg: Any, ok: Callable[[Any], bool], least: float | None = None) -> float | None:
    """The largest value of knob `k` (on its slider's grid, from `least`, default its minimum, up to its
    value) for which ``ok(cfg with it)``; None if none. Bisection: the cost grows with the value."""
    lo, cur = float(k.lo if least is None else least), float(getattr(cfg, k.name))
    step = float(k.step or (1 if k.kind == "int" else (cur - lo) / 64 or 1))

    def at(i: int) -> Any:
        v = lo + i * step
        return dataclasses.replace(cfg, **{k.name: int(round(v)) if k.kind == "int" else v})

    if not ok(at(0)):
        return None
    a, b = 0, int(math.floor((cur - lo) / step + 1e-9))  # ok at a; the largest i in [a, b] that is ok
    while a < b:
        mid = (a + b + 1) // 2
        a, b = (mid, b) if ok(at(mid)) else (a, mid - 1)
    return getattr(at(a), k.name)


def _shrink_together(ks: list[Any], cfg: Any, ok: Callable[[Any], bool],
                     floor: Callable[[Any], float] = lambda k: float(k.lo)) -> dict[str, Any]:
    """The largest values of the knobs `ks`, shrunk together (the same fraction of the way from their
    value to their minimum, on a log scale), with which ``ok(cfg)``: {name: value} for the first three
    (each then shrinks less than with two), or four if three are not enough; {} if even all of them
    at their minimum are not enough."""
    def at(subset: list[Any], t: float) -> dict[str, Any]:
        out = {}
        for k in subset:
            cur, lo = float(getattr(cfg, k.name)), floor(k)
            v = math.exp((1 - t) * math.log(cur) + t * math.log(lo)) if lo > 0 else cur + t * (lo - cur)
            step = float(k.step or 0)
            if step > 0:  # down to the slider's grid: never more than the fraction asked
                base = float(k.lo)
                v = max(lo, base + math.floor((v - base) / step + 1e-9) * step)
            out[k.name] = int(round(v)) if k.kind == "int" else v
        return out

    for n in range(min(3, len(ks)), len(ks) + 1):
        subset = ks[:n]
        if not ok(dataclasses.replace(cfg, **at(subset, 1.0))):
            continue
        a, b = 0.0, 1.0  # ok at b; the least shrinking that is ok
        for _ in range(30):
            mid = (a + b) / 2
            if ok(dataclasses.replace(cfg, **at(subset, mid))):
                b = mid
            else:
                a = mid
        return at(subset, b)
    return {}


def _most_iterations(method: str, cfg: Any, device: torch.device, seconds_budget: float) -> int:
    """The most iterations (at most the config's) whose run fits `seconds_budget`; 0 if not even one."""
    def ok(n: int) -> bool:
        return estimate(method, dataclasses.replace(cfg, iterations=n), device).total_seconds <= seconds_budget

    if not ok(1):
        return 0
    a, b = 1, int(cfg.iterations)
    while a < b:
        mid = (a + b + 1) // 2
        a, b = (mid, b) if ok(mid) else (a, mid - 1)
    return a


def advice(method: str, cfg: Any, device: torch.device | str, memory_budget_bytes: float | None,
           seconds_budget: float | None, knob_lookup: Any = None) -> str:
    """Why a run does not fit, in plain words: what it needs and what the server allows; the settings
    that cost most (ranked by how much the estimate falls at their minimum) with, for the top three,
    the largest value of each that would fit with the others unchanged; and the most iterations that
    fit the time limit.

    The settings are ranked by memory when the memory is over (the time can always be cut by fewer
    iterations), else by time. `knob_lookup`: the knobs of the config (a list, or a function of the
    config class, like :func:`recon.params.knobs`, the default).
    """
    device = torch.device(device)
    est = estimate(method, cfg, device)
    mem_over = memory_budget_bytes is not None and est.memory_bytes > memory_budget_bytes
    time_over = seconds_budget is not None and est.total_seconds > seconds_budget
    allowed = [human_bytes(memory_budget_bytes) if memory_budget_bytes is not None else "",
               human_seconds(seconds_budget) if seconds_budget is not None else ""]
    head = (f"This run needs about {human_bytes(est.memory_bytes)} and {human_seconds(est.total_seconds)}; "
            f"this server allows {' and '.join(x for x in allowed if x) or 'any amount'} per run.")
    if not (mem_over or time_over):
        return head + " It fits."

    def cost(c: Any) -> float:
        e = estimate(method, c, device)
        return e.memory_bytes if mem_over else e.total_seconds

    budget = memory_budget_bytes if mem_over else seconds_budget
    base = cost(cfg)

    def floor(k: Any) -> float:
        """The least value of knob `k` worth suggesting: fewer training views than views per step only
        caps the views per step, which that knob says more plainly."""
        if k.name == "num_views" and hasattr(cfg, "views_per_step"):
            return max(float(k.lo), float(cfg.views_per_step))
        return float(k.lo)

    ranked = []
    for k in _knobs(cfg, knob_lookup):
        if k.kind not in ("int", "float") or k.name in ("iterations", "seed") or k.lo is None:
            continue
        if float(getattr(cfg, k.name)) <= floor(k):
            continue
        low = int(floor(k)) if k.kind == "int" else floor(k)
        fall = 1 - cost(dataclasses.replace(cfg, **{k.name: low})) / base
        if fall > 0.05:  # settings that hardly matter are not worth naming
            ranked.append((fall, k))
    ranked.sort(key=lambda fk: -fk[0])
    top = [k for _, k in ranked[:4]]
    alone = {k.name: _largest_fitting(k, cfg, lambda c: cost(c) <= budget, floor(k)) for k in top[:3]}
    together: dict[str, Any] = {}
    if len(top) >= 2 and sum(v is not None for v in alone.values()) < 2:
        # one setting alone is not enough (or only one is, at an extreme): shrink the top ones together
        together = _shrink_together(top, cfg, lambda c: cost(c) <= budget, floor)
    parts = []
    for i, k in enumerate(top):
        text = f"{_short(k.label)} {_fmt(getattr(cfg, k.name), k.kind)}"
        if i < 3 and alone[top[0].name] is not None:
            v = alone[k.name]
            text += (f" (→ {_fmt(v, k.kind)}{' would fit' if i == 0 else ''})" if v is not None
                     else " (not enough alone)")
        parts.append(text)
    if together:
        named = [f"{_short(k.label)} {_fmt(together[k.name], k.kind)}" for k in top if k.name in together]
        parts[-1] += "; together, " + ", ".join(named[:-1]) + f" and {named[-1]} would fit"
    elif top and alone[top[0].name] is None:
        parts[-1] += "; even all of them at their minimum would not fit"
    msg = head + (" What costs most: " + ", ".join(parts) if parts else "")
    if time_over:
        fixed = est.setup_seconds + est.evaluation_seconds
        per = est.seconds_per_step * (1 + EXTRAS)
        most = _most_iterations(method, cfg, device, seconds_budget)
        if most >= 1:
            it = f"iterations {est.iterations} (→ {most} fit the time limit)"
        elif fixed >= seconds_budget:
            it = f"the setup and final scoring alone take about {human_seconds(fixed)}"
        else:
            it = f"one step alone takes about {human_seconds(per)}"
        msg += ("; " if parts else " ") + it
    return msg + "."


# --- measurement (calibration and the tests) ---------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    """The kernel's record of this process's peak resident memory since the last reset (0 if unknown)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _make_config(method: str, values: dict[str, Any]) -> Any:
    from . import params
    from .methods import get_method

    cls = get_method(method)
    make = getattr(params, "validate", None) or getattr(params, "from_values")
    cfg, _ = make(cls.Config, values)
    return cfg


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one config in this process and measure it (call in a fresh process: ``--measure``).

    `spec`: ``method``, ``values`` (knob values; the rest default) or ``preset`` plus ``values``,
    and ``steps`` (default: the config's iterations). Returns the phases' peak growth over the
    resident memory before the run (bytes) and their seconds, the load average and the estimate.
    """
    import gc

    from . import targets
    from .assets import load_builtin
    from .methods import get_method

    torch.manual_seed(0)
    name = spec["method"]
    cls = get_method(name)
    values = {**(cls.presets[spec["preset"]] if spec.get("preset") else {}), **spec.get("values", {})}
    cfg = _make_config(name, values)
    steps = int(spec.get("steps") or cfg.iterations)
    device = torch.device("cpu")
    target = load_builtin(spec.get("target", "cow"))
    target.meshes(device)
    targets._views_cache.clear()
    gc.collect()
    base = _rss()
    peak = [base]
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            r = _rss()
            if r > peak[0]:
                peak[0] = r
            time.sleep(0.002)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    phases: dict[str, dict[str, float]] = {}

    def phase(label: str, fn: Callable[[], Any]) -> Any:
        _reset_hwm()
        peak[0] = _rss()
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        phases[label] = dict(seconds=dt, cpu_seconds=cpu, peak=max(_hwm(), peak[0], _rss()) - base,
                             after=_rss() - base)
        return out

    load0 = os.getloadavg()[0]
    method = phase("setup", lambda: cls(target, cfg, device))
    for i in range(steps):
        phase(f"step{i}", method.step)
    phase("live", lambda: method.evaluate(live=True))
    if spec.get("full", True):  # the full evaluation of a big NeRF takes minutes on a CPU
        phase("full", lambda: method.evaluate())
    phase("snapshot", method.snapshot)
    done.set()
    step_keys = [f"step{i}" for i in range(steps)]
    step_times = sorted(phases[k]["seconds"] for k in step_keys[1:] or step_keys)
    est = estimate(name, cfg, device) if name in COEFFICIENTS else None
    return dict(
        spec=spec, loadavg=(load0, os.getloadavg()[0]), phases=phases, steps=steps,
        peak={"setup": phases["setup"]["peak"], "step": max(phases[k]["peak"] for k in step_keys),
              "evaluate": max(phases[k]["peak"] for k in ("live", "full", "snapshot") if k in phases)},
        measured_bytes=max(p["peak"] for p in phases.values()),
        seconds={"setup": phases["setup"]["seconds"], "step": step_times[len(step_times) // 2],
                 "step_min": step_times[0], "evaluate": phases.get("full", {}).get("seconds")},
        estimate=dataclasses.asdict(est) if est else None,
    )


def measure_times(specs: list[dict[str, Any]], rounds: int = 2, log: Callable[[str], None] | None = None
                  ) -> list[list[dict[str, float]]]:
    """Seconds of the setup (views cache cleared), the steps (the fastest after the first) and the full
    evaluation of each spec, in this process, `rounds` times round the list: on a shared machine the
    fastest of several tries, spread in time, is the closest to the machine's own speed.

    Returns, per spec, one ``{"setup", "step", "evaluate", "load"}`` per round.
    """
    import gc

    from . import targets
    from .assets import load_builtin
    from .methods import get_method

    device = torch.device("cpu")
    target = load_builtin("cow")
    out: list[list[dict[str, float]]] = [[] for _ in specs]
    for _ in range(rounds):
        for i, spec in enumerate(specs):
            cls = get_method(spec["method"])
            cfg = _config_of(spec)
            targets._views_cache.clear()
            gc.collect()
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            method = cls(target, cfg, device)
            setup = time.perf_counter() - t0
            times = []
            for _ in range(int(spec.get("steps") or cfg.iterations)):
                t0 = time.perf_counter()
                method.step()
                times.append(time.perf_counter() - t0)
            evaluate = None
            if spec.get("full", True):
                t0 = time.perf_counter()
                method.evaluate()
                evaluate = time.perf_counter() - t0
            del method
            row = dict(setup=setup, step=min(times[1:] or times), evaluate=evaluate, load=load)
            out[i].append(row)
            if log:
                log(f"timed {spec.get('label')}: setup {setup:.1f} s, step {row['step']:.2f} s, "
                    f"evaluate {evaluate or 0:.1f} s (load {load:.1f})")
    return out


def measure_in_subprocess(spec: dict[str, Any], timeout: float = 900, threads: int | None = None) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process (so that its memory is the run's alone)."""
    env = dict(os.environ, RECON_DEVICE="cpu")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-m", "recon.cost", "--measure", json.dumps(spec)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# --- calibration ------------------------------------------------------------------------------------------

def _spec(method: str, label: str, quick: bool = False, steps: int = 3, full: bool = True, **values: Any) -> dict[str, Any]:
    return dict(method=method, label=label, quick=quick, steps=steps, full=full, values=dict(iterations=steps, **values))


_V = dict(num_views=4)  # a cheap target render unless the config is about the setup
#: The configs measured to fit the coefficients: each driver varied over a wide range, at sizes that
#: run in about a minute each on a 2-core CPU ("quick": the subset for --quick).
CALIBRATION: list[dict[str, Any]] = [
    # volume: grid, voxels x views, ray samples, evaluation chunks; the setup's target renders
    _spec("volume", "volume D64 S32 B1 P64", True, grid_size=64, image_size=32, views_per_step=1, points_per_ray=64, **_V),
    _spec("volume", "volume D192 S32 B1 P32", True, grid_size=192, image_size=32, views_per_step=1, points_per_ray=32, **_V),
    _spec("volume", "volume D128 S32 B8 P32", True, grid_size=128, image_size=32, views_per_step=8, points_per_ray=32,
          num_views=8),
    _spec("volume", "volume D64 S64 B4 P256", True, grid_size=64, image_size=64, views_per_step=4, points_per_ray=256, **_V),
    _spec("volume", "volume D32 S128 B4 P128", False, grid_size=32, image_size=128, views_per_step=4, points_per_ray=128,
          **_V),
    _spec("volume", "volume D96 S96 B2 P192", False, grid_size=96, image_size=96, views_per_step=2, points_per_ray=192, **_V),
    _spec("volume", "volume D256 S32 B2 P16", False, grid_size=256, image_size=32, views_per_step=2, points_per_ray=16, **_V),
    _spec("volume", "volume D192 S48 B2 P256", False, grid_size=192, image_size=48, views_per_step=2,
          points_per_ray=256, **_V),
    _spec("volume", "volume D64 S32 B4 P512", False, grid_size=64, image_size=32, views_per_step=4, points_per_ray=512, **_V),
    _spec("volume", "volume N40 S128 (setup)", True, grid_size=32, image_size=128, views_per_step=1, points_per_ray=16,
          num_views=40),
    _spec("volume", "volume N16 S256 (setup)", False, grid_size=32, image_size=256, views_per_step=1, points_per_ray=16,
          num_views=16),
    _spec("volume", "volume N100 S256 (setup)", False, grid_size=32, image_size=256, views_per_step=1,
          points_per_ray=16, num_views=100),
    # nerf: hidden width, harmonic functions, rays x points; the live estimate's one big call
    _spec("nerf", "nerf N100 S64 (setup)", False, harmonic_functions=4, hidden=16, rays_per_image=64,
          points_per_ray=16, views_per_step=1, image_size=64, num_views=100),
    _spec("nerf", "nerf K8 H64 R256 P48 B4", True, harmonic_functions=8, hidden=64, rays_per_image=256, points_per_ray=48,
          views_per_step=4, image_size=32, **_V),
    _spec("nerf", "nerf K60 H256 R128 P32 B2", True, harmonic_functions=60, hidden=256, rays_per_image=128,
          points_per_ray=32, views_per_step=2, image_size=32, **_V),
    _spec("nerf", "nerf K60 H512 R256 P64 B2", False, full=False, harmonic_functions=60, hidden=512, rays_per_image=256,
          points_per_ray=64, views_per_step=2, image_size=32, **_V),
    _spec("nerf", "nerf K4 H32 R2048 P128 B4", True, harmonic_functions=4, hidden=32, rays_per_image=2048,
          points_per_ray=128, views_per_step=4, image_size=32, **_V),
    _spec("nerf", "nerf K30 H128 R512 P128 B4", False, harmonic_functions=30, hidden=128, rays_per_image=512,
          points_per_ray=128, views_per_step=4, image_size=64, **_V),
    _spec("nerf", "nerf K60 H64 R512 P256 B2", False, harmonic_functions=60, hidden=64, rays_per_image=512,
          points_per_ray=256, views_per_step=2, image_size=32, **_V),
    _spec("nerf", "nerf K60 H16 R2048 P64 B4", False, full=False, harmonic_functions=60, hidden=16,
          rays_per_image=2048, points_per_ray=64, views_per_step=4, image_size=32, **_V),
    _spec("nerf", "nerf K1 H16 R4096 P64 B4", False, full=False, harmonic_functions=1, hidden=16, rays_per_image=4096,
          points_per_ray=64, views_per_step=4, image_size=32, **_V),
    _spec("nerf", "nerf K8 H64 R256 P48 B4 N8 S64", False, harmonic_functions=8, hidden=64, rays_per_image=256,
          points_per_ray=48, views_per_step=4, image_size=64, num_views=8),
    _spec("nerf", "nerf K12 H128 R64 P512 B1", False, full=False, harmonic_functions=12, hidden=128, rays_per_image=64,
          points_per_ray=512, views_per_step=1, image_size=32, **_V),
    # textured mesh: fragments (views x size^2 x faces per pixel), shading, sphere faces x views
    _spec("textured_mesh", "textured L3 S64 K8 B1", True, sphere_level=3, image_size=64, faces_per_pixel=8,
          views_per_step=1, optimizer="adam", lr=0.02, **_V),
    _spec("textured_mesh", "textured L4 S128 K50 B2", True, sphere_level=4, image_size=128, faces_per_pixel=50,
          views_per_step=2, **_V),
    _spec("textured_mesh", "textured L4 S64 K100 B4", False, sphere_level=4, image_size=64, faces_per_pixel=100,
          views_per_step=4, **_V),
    _spec("textured_mesh", "textured L6 S32 K10 B2", True, sphere_level=6, image_size=32, faces_per_pixel=10,
          views_per_step=2, **_V),
    _spec("textured_mesh", "textured L4 S128 K50 B2 silhouette", False, sphere_level=4, image_size=128,
          faces_per_pixel=50, views_per_step=2, silhouette_only=True, **_V),
    _spec("textured_mesh", "textured L2 S256 K20 B1", False, sphere_level=2, image_size=256, faces_per_pixel=20,
          views_per_step=1, **_V),
    _spec("textured_mesh", "textured L5 S96 K30 B3", False, sphere_level=5, image_size=96, faces_per_pixel=30,
          views_per_step=3, **_V),
    _spec("textured_mesh", "textured N24 S128 (setup)", False, sphere_level=1, image_size=128, faces_per_pixel=1,
          views_per_step=1, num_views=24),
    # deform: sphere level, points per surface
    _spec("deform", "deform L4 P5000", True, sphere_level=4, points=5000, coarse_points=5000),
    _spec("deform", "deform L6 P1000", True, sphere_level=6, points=1000, coarse_points=1000),
    _spec("deform", "deform L2 P20000", True, sphere_level=2, points=20000, coarse_points=20000),
    _spec("deform", "deform L5 P30000", False, sphere_level=5, points=30000, coarse_points=30000),
    _spec("deform", "deform L1 P100", False, sphere_level=1, points=100, coarse_points=100),
]

#: The drivers each phase's coefficients multiply (the fit's columns), by method.
_SETUP_MEMORY = ["target pixels", "pixels rendered at once (targets)"]
_SETUP_SECONDS = ["training views", "target pixels"]
MEMORY_DRIVERS: dict[str, dict[str, list[str]]] = {
    "volume": {"setup": _SETUP_MEMORY + ["grid voxels"],
               "step": ["target pixels", "grid voxels", "grid voxels x views per step", "ray samples per step"],
               "evaluate": ["target pixels", "grid voxels", "samples rendered at once (no grad)"]},
    "nerf": {"setup": _SETUP_MEMORY,
             "step": ["target pixels", "ray samples per step", "hidden activations per step",
                      "embedding values per step"],
             "evaluate": ["target pixels", "samples rendered at once (no grad)", "network values per call (no grad)"]},
    "textured_mesh": {"setup": _SETUP_MEMORY,
                      "step": ["target pixels", "sphere faces", "fragments per step", "shaded fragments per step",
                               "faces x views per step"],
                      "evaluate": ["target pixels", "sphere faces", "fragments rendered at once (no grad)"]},
    "deform": {"setup": ["sphere vertices"], "step": ["sphere vertices", "points per surface"],
               "evaluate": ["sphere vertices"]},
}
SECONDS_DRIVERS: dict[str, dict[str, list[str]]] = {
    "volume": {"setup": _SETUP_SECONDS,
               "step": ["ray samples per step", "ray samples x grid side", "grid voxels", "grid voxels x views per step"],
               "evaluate": ["evaluation samples", "evaluation samples x grid side", "grid voxels"]},
    "nerf": {"setup": _SETUP_SECONDS,
             "step": ["ray samples per step", "embedding values per step", "network multiply-adds per step"],
             "evaluate": ["evaluation samples", "evaluation multiply-adds"]},
    "textured_mesh": {"setup": _SETUP_SECONDS,
                      "step": ["fragments per step", "shaded fragments per step", "faces x views per step",
                               "tiles per step"],
                      "evaluate": ["sphere faces"]},
    "deform": {"setup": ["sphere vertices"], "step": ["sphere vertices", "points per surface", "point pairs per step"],
               "evaluate": ["sphere vertices"]},
}
#: Methods whose setup is the same target render: their setup rows are fitted together.
_IMAGE_METHODS = ("volume", "nerf", "textured_mesh")


def _nnls(a: torch.Tensor, b: torch.Tensor, iters: int = 200) -> torch.Tensor:
    """Non-negative least squares min |a x - b| s.t. x >= 0 (Lawson-Hanson), float64."""
    m, n = a.shape
    x = torch.zeros(n, dtype=torch.float64)
    passive = torch.zeros(n, dtype=torch.bool)
    for _ in range(iters):
        w = a.T @ (b - a @ x)
        cand = (~passive) & (w > 1e-12)
        if not cand.any():
            break
        passive[torch.argmax(torch.where(cand, w, torch.full_like(w, -math.inf)))] = True
        while True:
            z = torch.zeros(n, dtype=torch.float64)
            idx = passive.nonzero().flatten()
            z[idx] = torch.linalg.lstsq(a[:, idx], b[:, None]).solution.flatten()
            if (z[idx] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = torch.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
            x[~passive] = 0
    return x


def fit(rows: list[tuple[dict[str, float], float]], names: list[str]) -> dict[str, float]:
    """Coefficients (const and one per driver name) minimising the relative squared error, all >= 0."""
    a = torch.tensor([[1.0] + [d.get(nm, 0.0) for nm in names] for d, _ in rows], dtype=torch.float64)
    y = torch.tensor([v for _, v in rows], dtype=torch.float64)
    a = a / y[:, None]
    scale = a.abs().max(0).values.clamp(min=1e-30)
    x = _nnls(a / scale, torch.ones(len(rows), dtype=torch.float64)) / scale
    return {nm: float(v) for nm, v in zip(["const"] + names, x.tolist())}


def _config_of(spec: dict[str, Any]) -> Any:
    from .methods import get_method

    cls = get_method(spec["method"])
    return _make_config(spec["method"], {**(cls.presets[spec["preset"]] if spec.get("preset") else {}),
                                         **spec.get("values", {})})


def fastest(r: dict[str, Any], phase: str) -> float | None:
    """The fastest measured seconds of a phase ("setup", "step", "evaluate") of a measured config."""
    tries = [r["seconds"][phase]] + [t[phase] for t in r.get("timing", [])]
    tries = [t for t in tries if t is not None]
    return min(tries) if tries else None


def calibrate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Coefficients fitted to measurements (from :func:`measure`), by method, kind and phase.

    The setup of the image methods is the same target render, so their setup rows are fitted
    together (the volume's also allocates its grid). Step seconds are fitted on configs without a
    coarse phase (their steps are all alike); the step memory on the fine phase's drivers (the
    larger one).
    """
    work = {}
    for r in results:
        m = r["spec"]["method"]
        work.setdefault(m, []).append((r, workload(m, _config_of(r["spec"]), r["spec"].get("full", True))))
    out: dict[str, Any] = {m: {"memory": {}, "seconds": {}} for m in work}

    def rows_of(methods: list[str], phase: str, kind: str) -> list[tuple[dict[str, float], float]]:
        rows = []
        for m in methods:
            for r, w in work.get(m, []):
                if phase == "setup":
                    drivers = w.setup
                elif phase == "step":
                    if kind == "seconds" and len(w.steps) > 1:
                        continue
                    drivers = w.steps[-1][1]
                else:
                    drivers = w.evaluate
                value = r["peak"][phase] if kind == "memory" else fastest(r, phase)
                if value is not None:
                    rows.append((drivers, value))
        return rows

    for kind, table_ in (("memory", MEMORY_DRIVERS), ("seconds", SECONDS_DRIVERS)):
        pooled = [m for m in _IMAGE_METHODS if m in work]
        if pooled:
            names = sorted({n for m in pooled for n in table_[m]["setup"]}, key=lambda n: (n != "training views", n))
            shared = fit(rows_of(pooled, "setup", kind), names)
            for m in pooled:
                out[m][kind]["setup"] = {k: v for k, v in shared.items() if k == "const" or k in table_[m]["setup"]}
        for m in work:
            for phase, names in table_[m].items():
                if phase == "setup" and m in pooled:
                    continue
                rows = rows_of([m], phase, kind)
                if rows:
                    out[m][kind][phase] = fit(rows, names)
    return out


def _average_step(method: str, cfg: Any, iterations: int, coefficients: dict) -> float:
    """The model's mean seconds per step over the first `iterations` steps of a run of `cfg`."""
    coef = coefficients[method]["seconds"]["step"]
    left, total = iterations, 0.0
    for count, drivers in workload(method, cfg).steps:
        n = min(count, left)
        total, left = total + n * _linear(coef, drivers), left - n
    return total / max(iterations - left, 1)


def quiet_factors(coefficients: dict, bench: dict) -> dict[str, dict[str, float]]:
    """How the seconds fitted on the shared machine map to the quiet machine's, per method.

    `bench` is the benchmark's record (``bench_results/bench.json``): each method's Tutorial and
    default preset timed on the quiet machine (load average 1-2), steps without evaluation, and the
    setup where it rendered the views (not from the cache). A loaded machine slows small steps (many
    small ops, thread hand-offs) more than big ones, so a step is mapped as ``const + scale x (the
    fitted step less its constant)``: the drivers' proportions from the calibration, the two numbers
    solved from the two presets (a geometric-mean scale and no constant if that would be negative).
    The evaluation is scaled like the steps; the setup by the geometric mean of its ratios.

    Returns {method: {"scale", "const", "loaded_const" (the fitted constant), "setup"}}.
    """
    rows: dict[str, list[tuple[float, float]]] = {}  # (the fitted step less its constant, quiet seconds)
    setups: dict[str, list[float]] = {}
    for m, sides in bench.get("methods", {}).items():
        if m not in coefficients:
            continue
        const = coefficients[m]["seconds"]["step"].get("const", 0.0)
        for side in ("tutorial", "recon"):
            r = sides.get(side)
            if not r:
                continue
            cfg = _make_config(m, r["config"])
            variable = _average_step(m, cfg, r["iterations"], coefficients) - const
            rows.setdefault(m, []).append((variable, r["s_per_iteration"]))
            if r["setup_s"] > 0.5:  # rendered its views (a cached target takes milliseconds)
                group = "image" if m in _IMAGE_METHODS else m
                setups.setdefault(group, []).append(
                    r["setup_s"] / _linear(coefficients[m]["seconds"]["setup"], workload(m, cfg).setup))

    def geomean(xs: list[float]) -> float:
        return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else 1.0

    out = {}
    for m, pts in rows.items():
        scale, const = geomean([q / v for v, q in pts]), 0.0
        if len(pts) == 2 and pts[0][0] != pts[1][0]:
            (v1, q1), (v2, q2) = pts
            s = (q1 - q2) / (v1 - v2)
            c = q1 - s * v1
            if s > 0 and c >= 0:
                scale, const = s, c
        out[m] = {"scale": scale, "const": const, "loaded_const": coefficients[m]["seconds"]["step"].get("const", 0.0),
                  "setup": geomean(setups.get("image" if m in _IMAGE_METHODS else m, []))}
    return out


def scale_seconds(coefficients: dict, factors: dict[str, dict[str, float]]) -> dict:
    """The coefficients with each method's seconds mapped to the quiet machine (:func:`quiet_factors`)."""
    out = json.loads(json.dumps(coefficients))
    for m, k in factors.items():
        sec = out[m]["seconds"]
        sec["setup"] = {name: v * k["setup"] for name, v in sec["setup"].items()}
        sec["step"] = {name: (k["const"] if name == "const" else v * k["scale"]) for name, v in sec["step"].items()}
        sec["evaluate"] = {name: v * k["scale"] for name, v in sec["evaluate"].items()}
    return out


def bench_table(bench: dict, coefficients: dict | None = None) -> str:
    """The quiet machine's benchmark of the presets against the estimates."""
    lines = [f"{'bench run (quiet machine)':36} {'s/step':>7} {'est':>7} {'ratio':>5}  {'setup s':>7} {'est':>6}"]
    for m, sides in bench.get("methods", {}).items():
        for side in ("tutorial", "recon"):
            r = sides.get(side)
            if not r or m not in (coefficients or COEFFICIENTS):
                continue
            cfg = _make_config(m, r["config"])
            est = _average_step(m, cfg, r["iterations"], coefficients or COEFFICIENTS)
            setup = _linear((coefficients or COEFFICIENTS)[m]["seconds"]["setup"], workload(m, cfg).setup)
            lines.append(f"{m + ' ' + side:36} {r['s_per_iteration']:7.3f} {est:7.3f} {est / r['s_per_iteration']:5.2f}"
                         f"  {r['setup_s']:7.2f} {setup:6.2f}")
    return "\n".join(lines)


def table(results: list[dict[str, Any]], coefficients: dict | None = None, factors: dict | None = None) -> str:
    """Measured vs estimated, one line per config: peak memory growth, seconds per step and setup
    seconds (the fastest try), and the load average when measured. The estimated seconds are the
    loaded machine's (the quiet machine's divided by `factors`, default :data:`QUIET_FACTORS`)."""
    lines = [f"{'config':44} {'meas MB':>8} {'est MB':>8} {'ratio':>5}  {'step s':>7} {'est s':>7} {'ratio':>5}"
             f"  {'setup s':>7} {'est s':>6}  load"]
    for r in results:
        spec = r["spec"]
        method, cfg, full = spec["method"], _config_of(spec), spec.get("full", True)
        coef = (coefficients or COEFFICIENTS)[method]
        w = workload(method, cfg, full)
        mem = max(phase_memory(method, cfg, coefficients, full).values())
        quiet = _linear(coef["seconds"]["step"], w.steps[-1][1])  # the measured steps: the last phase's
        k = (QUIET_FACTORS if factors is None else factors).get(method)
        step = (quiet - k["const"]) / k["scale"] + k["loaded_const"] if k else quiet
        setup = _linear(coef["seconds"]["setup"], w.setup) / (k["setup"] if k else 1.0)
        mb, got_step, got_setup = r["measured_bytes"] / 1e6, fastest(r, "step"), fastest(r, "setup")
        loads = [r["loadavg"][0]] + [t["load"] for t in r.get("timing", [])]
        label = spec.get("label") or f"{method} {spec.get('preset', '')}"
        lines.append(f"{label[:44]:44} {mb:8.0f} {mem / 1e6:8.0f} {mem / 1e6 / mb:5.2f}  {got_step:7.2f} "
                     f"{step:7.2f} {step / got_step:5.2f}  {got_setup:7.1f} {setup:6.1f}  {min(loads):.1f}")
    return "\n".join(lines)


def _literal(coefficients: dict[str, Any]) -> str:
    """The coefficients as a Python literal, 4 significant digits."""
    def fmt(x: Any, depth: int) -> str:
        if isinstance(x, dict):
            pad = " " * (depth + 4)
            inner = ",\n".join(f"{pad}{k!r}: {fmt(v, depth + 4)}" for k, v in x.items())
            return "{\n" + inner + "}"
        return f"{x:.4g}"
    return fmt(coefficients, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recon.cost", description=__doc__.split("\n")[0])
    parser.add_argument("--calibrate", action="store_true", help="measure the calibration configs and fit")
    parser.add_argument("--quick", action="store_true", help="with --calibrate: a smaller set of configs")
    parser.add_argument("--jobs", type=int, default=1, help="measurements run at once (memory is per process; "
                                                            "timings are best with 1)")
    parser.add_argument("--save", help="with --calibrate: write the measurements to this JSON file")
    parser.add_argument("--load", help="fit measurements saved by --save instead of measuring")
    parser.add_argument("--only", help="with --calibrate: only this method")
    parser.add_argument("--rounds", type=int, default=2, help="with --calibrate: timing tries per config, one "
                                                                "config at a time (0: the memory runs' times only)")
    parser.add_argument("--no-bench", action="store_true", help="keep the seconds as measured (do not scale them "
                                                                 "to the quiet machine's benchmark)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))), flush=True)
        return 0
    if not (args.calibrate or args.load):
        parser.print_help()
        return 2
    if args.load:
        with open(args.load) as fh:
            text = fh.read()
        results = json.loads(text) if text.lstrip().startswith("[") else [json.loads(ln) for ln in text.splitlines() if ln]
    else:
        from concurrent.futures import ThreadPoolExecutor

        specs = [s for s in CALIBRATION if (not args.quick or s.get("quick"))
                 and (not args.only or s["method"] == args.only)]
        results = []

        def one(spec: dict[str, Any]) -> dict[str, Any]:
            r = measure_in_subprocess(spec)
            if args.save:
                with open(args.save + "l", "a") as fh:
                    fh.write(json.dumps(r) + "\n")
            print(f"measured {spec.get('label')}: {r['measured_bytes'] / 1e6:.0f} MB, step {r['seconds']['step']:.2f} s,"
                  f" setup {r['seconds']['setup']:.1f} s (load {r['loadavg'][0]:.1f})", file=sys.stderr, flush=True)
            return r

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(one, specs))
        if args.rounds:  # the seconds: the fastest of the memory run and a few more tries, one at a time
            for r, tries in zip(results, measure_times(specs, args.rounds, lambda m: print(m, file=sys.stderr))):
                r["timing"] = tries
        if args.save:
            with open(args.save, "w") as fh:
                json.dump(results, fh)
    loaded = calibrate(results)
    bench_file = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench_results",
                              "bench.json")
    bench = json.load(open(bench_file)) if os.path.exists(bench_file) and not args.no_bench else {}
    factors = quiet_factors(loaded, bench) if bench else {}
    coefficients = scale_seconds(loaded, factors)
    print("COEFFICIENTS = " + _literal(coefficients))
    print("QUIET_FACTORS = " + _literal(factors))
    print(table(results, {**COEFFICIENTS, **coefficients}, factors))
    if bench:
        print(bench_table(bench, {**COEFFICIENTS, **coefficients}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
