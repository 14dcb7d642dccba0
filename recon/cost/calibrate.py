"""Calibration: the configs measured, the non-negative least-squares fit of every coefficient, and the
tables that compare measured with estimated (``python -m recon.cost --calibrate``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

import torch

from .fitted import COEFFICIENTS, QUIET_FACTORS
from .measure import _config_of, _make_config, measure, measure_in_subprocess, measure_times
from .model import _linear, phase_memory, workload
from .specs import CALIBRATION

# --- calibration ------------------------------------------------------------------------------------------

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
    bench_file = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench_results",
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
