"""Measuring what a run really costs, for calibration and the tests: the peak memory growth of each
phase (setup, steps, evaluation) and its seconds, in a fresh process."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import torch

from .. import targets
from ..assets import load_builtin
from ..methods import get_method
from ..params import validate
from .fitted import COEFFICIENTS
from .model import estimate

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
    cls = get_method(method)
    cfg, _ = validate(cls.Config, values)
    return cfg


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one config in this process and measure it (call in a fresh process: ``--measure``).

    `spec`: ``method``, ``values`` (knob values; the rest default) or ``preset`` plus ``values``,
    and ``steps`` (default: the config's iterations). Returns the phases' peak growth over the
    resident memory before the run (bytes) and their seconds, the load average and the estimate.
    """

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
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-m", "recon.cost", "--measure", json.dumps(spec)], env=env, cwd=root,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _config_of(spec: dict[str, Any]) -> Any:
    cls = get_method(spec["method"])
    return _make_config(spec["method"], {**(cls.presets[spec["preset"]] if spec.get("preset") else {}),
                                         **spec.get("values", {})})
