"""Time-to-quality benchmark: the PyTorch3D tutorial recipes against recon's defaults.

``python -m recon.bench`` (or ``make bench``) runs, for each method on the cow, in this one process
and one after the other:

(a) the tutorial recipe (the method's "Tutorial" preset, which reproduces the tutorial's settings),
(b) recon's own default (deformation) or "Quick" preset (the image-based methods),

and records quality against optimisation wall-clock time at checkpoints (evaluation time is not
counted). Quality is the Chamfer distance with 10k points per surface for deformation, held-out
PSNR and silhouette IoU for the others. The summary says how long (b) needs to reach the quality
(a) has at the end of its budget: its full iteration count where that fits, else a fixed time
budget. It also measures the cost of live streaming through the app's runner, the latency of the
first live update, and peak memory.

Writes ``bench.json`` and ``bench.md`` into ``--out``. ``--quick`` is a smoke run of a few minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .assets import load_builtin
from .device import describe, pick_device
from .methods import METHODS, get_method
from .params import from_values


@dataclass
class Spec:
    """How one method is judged."""

    metric: str  # the quality metric (a key of Method.evaluate())
    higher_is_better: bool
    tutorial_iterations: int | None  # run the tutorial to this count when it fits the time budget
    tutorial_budget_s: float  # else stop it after this much optimisation time
    recon_preset: str | None  # None: the config defaults


SPECS: dict[str, Spec] = {
    "deform": Spec("chamfer_10k", False, 2000, 900.0, "Fast"),
    "textured_mesh": Spec("psnr", True, None, 600.0, "Quick"),
    "volume": Spec("psnr", True, None, 600.0, "Quick"),
    "nerf": Spec("psnr", True, None, 600.0, "Quick"),
}


class PeakRSS:
    """Samples this process's resident memory in the background; `peak` is the largest seen (bytes)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def current() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * 4096
        except OSError:  # not Linux: fall back to the lifetime peak
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_run(method_name: str, overrides: dict[str, Any], budget_s: float, max_iterations: int | None,
              device: torch.device, target: float | None = None, higher: bool = False, metric: str = "",
              eval_every_s: float | None = None, min_seconds: float = 0.0,
              must_eval_s: tuple[float, ...] = ()) -> dict[str, Any]:
    """Optimise with a wall-clock budget; evaluate at checkpoints (evaluation time not counted).

    Evaluates every `eval_every_s` of optimisation, but never spends more than a third of the wall
    clock on evaluation (an evaluation of the tutorial's NeRF at 128 px takes tens of seconds on a
    CPU), and always at the first step past each of `must_eval_s` (e.g. the 60-second figure).
    Stops early once `target` quality is reached (when given) and `min_seconds` have passed.
    """
    cls = get_method(method_name)
    cfg, msgs = from_values(cls.Config, overrides)
    if msgs:
        raise ValueError(f"{method_name}: {msgs}")
    asset = load_builtin("cow")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        method = cls(asset, cfg, device)
        _sync(device)
        setup_s = time.perf_counter() - t0
        iterations = max_iterations or cfg.iterations
        eval_every = eval_every_s or max(1.0, budget_s / 40)
        checkpoints = [{"time": 0.0, "iteration": 0, **method.evaluate()}]
        clock, it, next_eval = 0.0, 0, eval_every
        reached = None

        def good(q: float) -> bool:
            return q >= target if higher else q <= target

        pending = sorted(must_eval_s)
        while it < iterations and clock < budget_s:
            t0 = time.perf_counter()
            terms = method.step()
            torch.stack(list(terms.values())).tolist()  # the runner's per-step sync, counted
            clock += time.perf_counter() - t0
            it += 1
            must = bool(pending) and clock >= pending[0]
            if must or clock >= next_eval or it == iterations or clock >= budget_s:
                pending = [t for t in pending if t > clock]
                t_eval = time.perf_counter()
                checkpoints.append({"time": clock, "iteration": it, **method.evaluate()})
                next_eval = clock + max(eval_every, 2.0 * (time.perf_counter() - t_eval))
                if target is not None and reached is None and good(checkpoints[-1][metric]):
                    reached = clock
                if reached is not None and clock >= min_seconds:
                    break
    peak_gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return dict(method=method_name, load_average=_load(), config=dataclasses.asdict(cfg), setup_s=setup_s, iterations=it,
                seconds=clock, s_per_iteration=clock / max(it, 1), peak_rss_gb=mem.peak / 2**30,
                peak_gpu_gb=None if peak_gpu is None else peak_gpu / 2**30, checkpoints=checkpoints,
                reached_target_s=reached)


def _load() -> float | None:
    """The machine's 1-minute load average: other work on the machine distorts timings."""
    try:
        import os

        return os.getloadavg()[0]
    except OSError:
        return None


def quality_at(checkpoints: list[dict], metric: str, seconds: float) -> float | None:
    """The quality after `seconds` of optimisation: at the step that crossed it (evaluated there, see
    timed_run's `must_eval_s`), or the last one measured if the run ended before."""
    after = [c for c in checkpoints if c["time"] >= seconds - 1e-9]
    return after[0][metric] if after else (checkpoints[-1][metric] if checkpoints else None)


def time_to(checkpoints: list[dict], metric: str, target: float, higher: bool) -> float | None:
    """Optimisation seconds to the first checkpoint at `target` quality, after at least one step: a
    tutorial that ends no better than where it started is passed at recon's first checkpoint."""
    for c in checkpoints:
        if c["iteration"] == 0:
            continue
        if (c[metric] >= target) if higher else (c[metric] <= target):
            return c["time"]
    return None


def summarise(name: str, spec: Spec, tutorial: dict[str, Any], recon: dict[str, Any]) -> dict[str, Any]:
    """The summary row of one method from its two timed runs (see bench_method)."""
    final = tutorial["checkpoints"][-1][spec.metric]
    t_recon = time_to(recon["checkpoints"], spec.metric, final, spec.higher_is_better)
    t_tut = tutorial["seconds"]
    summary = dict(
        method=name, metric=spec.metric, tutorial_quality=final, tutorial_seconds=t_tut,
        tutorial_iterations=tutorial["iterations"], recon_seconds_to_tutorial_quality=t_recon,
        speedup=(t_tut / t_recon) if t_recon else None,
        tutorial_at_60s=quality_at(tutorial["checkpoints"], spec.metric, 60.0),
        recon_at_60s=quality_at(recon["checkpoints"], spec.metric, 60.0),
        tutorial_s_per_it=tutorial["s_per_iteration"], recon_s_per_it=recon["s_per_iteration"],
        tutorial_peak_gb=tutorial["peak_rss_gb"], recon_peak_gb=recon["peak_rss_gb"],
        tutorial_peak_gpu_gb=tutorial["peak_gpu_gb"], recon_peak_gpu_gb=recon["peak_gpu_gb"],
        load_average=[tutorial["load_average"], recon["load_average"]],
    )
    if "iou" in tutorial["checkpoints"][-1] and spec.metric != "iou":
        summary["tutorial_iou"] = tutorial["checkpoints"][-1]["iou"]
        summary["recon_iou_at_60s"] = quality_at(recon["checkpoints"], "iou", 60.0)
    return summary


def bench_method(name: str, spec: Spec, device: torch.device, quick: bool, log) -> dict[str, Any]:
    cls = get_method(name)
    scale = 0.1 if quick else 1.0
    tut_budget = spec.tutorial_budget_s * scale
    tut_iters = spec.tutorial_iterations
    if quick and tut_iters:
        tut_iters = max(20, int(tut_iters * scale))
    log(f"[{name}] tutorial recipe: up to {tut_iters or 'inf'} iterations / {tut_budget:.0f} s")
    tutorial = timed_run(name, cls.presets["Tutorial"], tut_budget, tut_iters or 10**9, device,
                         eval_every_s=max(1.0, tut_budget / 30), must_eval_s=(60.0 * scale,))
    final = tutorial["checkpoints"][-1][spec.metric]
    log(f"[{name}] tutorial: {tutorial['iterations']} it in {tutorial['seconds']:.1f} s, {spec.metric} {final:.5g}")
    recon_values = cls.presets[spec.recon_preset] if spec.recon_preset else {}
    # Half the tutorial's time is enough to judge a 3x target (and a 2x one); never less than a minute,
    # so that the 60-second figure is always measured.
    recon_budget = max(60.0 * scale, tutorial["seconds"] / 2)
    log(f"[{name}] recon ({spec.recon_preset or 'defaults'}): up to {recon_budget:.0f} s, "
        f"until {spec.metric} {'>=' if spec.higher_is_better else '<='} {final:.5g}")
    # Keep going past the target until the 60-second figure is in, then judge from the checkpoints.
    recon = timed_run(name, recon_values, recon_budget, None, device, target=final, higher=spec.higher_is_better,
                      metric=spec.metric, min_seconds=60.0 * scale, eval_every_s=max(1.0, recon_budget / 100),
                      must_eval_s=(60.0 * scale,))
    summary = summarise(name, spec, tutorial, recon)
    t_recon = summary["recon_seconds_to_tutorial_quality"]
    log(f"[{name}] recon reached it after {t_recon if t_recon is None else round(t_recon, 1)} s "
        f"(speed-up {summary['speedup'] and round(summary['speedup'], 2)}x)")
    return dict(summary=summary, tutorial=tutorial, recon=recon)


#: Streaming is measured on these runs: deformation at its defaults, and the volume's Quick preset
#: without its coarse start (so that a step costs the same all through the window).
STREAMING_RUNS: dict[str, dict[str, Any]] = {
    "deform": {"iterations": 100000},
    "volume": {**get_method("volume").presets["Quick"], "coarse_grid": 0, "coarse_image_size": 0, "iterations": 100000},
}


def bench_streaming(device: torch.device, seconds: float, log, method: str = "deform") -> dict[str, Any]:
    """Iteration rate of a run driven through the app's runner and page refresh vs headless."""
    from . import vis
    from .runner import Run
    from .session import views_image
    from .targets import target_points

    cls = get_method(method)
    cfg, _ = from_values(cls.Config, STREAMING_RUNS[method])
    asset = load_builtin("cow")
    tpts = target_points(asset)

    def measure(streamed: bool) -> float:
        run = Run(cls, asset, cfg, device).start()
        while run.iteration < 3:  # skip setup and the first evaluation
            time.sleep(0.01)
        it0, t0 = run.iteration, time.perf_counter()
        last_scene = 0.0
        while time.perf_counter() - t0 < seconds:
            if streamed:  # what app.run_stream does every REFRESH_S
                run.status()
                vis.loss_figure(list(run.history), list(run.events)).to_json()
                if time.perf_counter() - last_scene >= 2.0:
                    _, snap = run.latest_snapshot()
                    vis.snapshot_figure(snap, tpts).to_json()
                    if snap is not None and snap.images:
                        views_image(snap)  # the page's target | render grid
                    run.request_snapshot()
                    last_scene = time.perf_counter()
                vis.metrics_figure(list(run.metric_history)).to_json()
            time.sleep(0.5)
        rate = (run.iteration - it0) / (time.perf_counter() - t0)
        run.close()
        return rate

    headless = measure(False)
    streamed = measure(True)
    log(f"[streaming] {method}: headless {headless:.2f} it/s, streamed {streamed:.2f} it/s")
    return dict(headless_its=headless, streamed_its=streamed, cost=1 - streamed / headless)


def bench_first_update(device: torch.device, log) -> dict[str, Any]:
    """Seconds from starting a run to its first loss point and first snapshot, per method."""
    from . import targets
    from .runner import Run

    out = {}
    for name in METHODS:
        cls = get_method(name)
        values = cls.presets.get(cls.device_presets.get(device.type, ""), {})
        cfg, _ = from_values(cls.Config, values)
        asset = load_builtin("cow")
        for cached in (False, True):
            if not cached:
                targets._views_cache.clear()
            t0 = time.perf_counter()
            run = Run(cls, asset, cfg, device).start()
            first_loss = first_snap = None
            while time.perf_counter() - t0 < 120 and (first_loss is None or first_snap is None):
                if first_loss is None and run.history:
                    first_loss = time.perf_counter() - t0
                if first_snap is None and run.latest_snapshot()[0] > 0:
                    first_snap = time.perf_counter() - t0
                if run.finished:
                    break
                time.sleep(0.01)
            run.close()
            key = f"{name} ({'cached' if cached else 'uncached'} target)"
            out[key] = dict(first_loss_s=first_loss, first_view_s=first_snap)
            log(f"[first update] {key}: loss after {first_loss and round(first_loss, 2)} s, "
                f"3D view after {first_snap and round(first_snap, 2)} s")
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "not reached"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['device']}, {m['cpu_count']} CPU cores, torch {m['torch']}, {m['platform']}; "
             f"{'quick smoke run' if result['quick'] else 'full run'} on {m['date']}.", "",
             "| method | quality metric | tutorial recipe: quality (iterations, seconds) | recon: seconds to that quality "
             "| speed-up | at 60 s: tutorial / recon | IoU: tutorial at the end / recon at 60 s "
             "| s per iteration: tutorial / recon | peak memory GB: tutorial / recon |",
             "|---|---|---|---:|---:|---|---|---|---|"]
    for r in result["methods"].values():
        s = r["summary"]
        iou = f"{s['tutorial_iou']:.3f} / {s['recon_iou_at_60s']:.3f}" if "tutorial_iou" in s else "-"
        lines.append(
            f"| {s['method']} | {s['metric']} | {_fmt(s['tutorial_quality'])} ({s['tutorial_iterations']} it, "
            f"{s['tutorial_seconds']:.0f} s) | {_fmt(s['recon_seconds_to_tutorial_quality'], 3)} | "
            f"{_fmt(s['speedup'], 3)}{'x' if s['speedup'] else ''} | {_fmt(s['tutorial_at_60s'])} / {_fmt(s['recon_at_60s'])} | "
            f"{iou} | {s['tutorial_s_per_it']:.3g} / {s['recon_s_per_it']:.3g} | "
            f"{s['tutorial_peak_gb']:.2f} / {s['recon_peak_gb']:.2f} |")
    streaming = result.get("streaming", {})
    if "headless_its" in streaming:  # results written before several methods were measured
        streaming = {"deform": streaming}
    for method, st in streaming.items():
        lines += ["", f"Live streaming ({method} through the runner with the page's refresh): "
                      f"{st['streamed_its']:.2f} it/s vs {st['headless_its']:.2f} it/s headless, "
                      f"cost {100 * st['cost']:.1f}%."]
    if "first_update" in result:
        lines += ["", "| first live update | first loss point (s) | first 3D view (s) |", "|---|---:|---:|"]
        for k, v in result["first_update"].items():
            lines.append(f"| {k} | {_fmt(v['first_loss_s'], 3)} | {_fmt(v['first_view_s'], 3)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recon.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few minutes (budgets / 10)")
    ap.add_argument("--methods", default=",".join(m for m in SPECS if m in METHODS),
                    help="comma-separated methods (default: all)")
    ap.add_argument("--out", default="bench_results", help="folder for bench.json and bench.md")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: RECON_DEVICE, else automatic)")
    ap.add_argument("--skip-extras", action="store_true", help="skip the streaming and first-update measurements")
    ap.add_argument("--only-extras", action="store_true",
                    help="measure only streaming and first updates, into the bench.json already in --out")
    ap.add_argument("--resummarise", action="store_true",
                    help="recompute the summary table from the bench.json in --out (no measurement)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in SPECS or n not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; choose from {[m for m in SPECS if m in METHODS]}")
    device = pick_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    result: dict[str, Any] = dict(
        quick=args.quick,
        machine=dict(device=describe(device), cpu_count=torch.get_num_threads(), torch=torch.__version__,
                     platform=platform.platform(), python=sys.version.split()[0],
                     date=time.strftime("%Y-%m-%d")),
        methods={},
    )
    if args.resummarise:  # recompute the summaries and the table from bench.json, measuring nothing
        result = json.loads((out / "bench.json").read_text())
        for name, r in result["methods"].items():
            r["summary"] = summarise(name, SPECS[name], r["tutorial"], r["recon"])
        names, args.skip_extras = [], True
    elif args.only_extras and (out / "bench.json").exists():
        result = json.loads((out / "bench.json").read_text())
        names = []
    for name in names:
        result["methods"][name] = bench_method(name, SPECS[name], device, args.quick, log)
        (out / "bench.json").write_text(json.dumps(result, indent=1, default=float))
    if not args.skip_extras:
        result["streaming"] = {m: bench_streaming(device, 10.0 if args.quick else 30.0, log, m) for m in STREAMING_RUNS}
        result["first_update"] = bench_first_update(device, log)
    (out / "bench.json").write_text(json.dumps(result, indent=1, default=float))
    md = markdown(result)
    (out / "bench.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
