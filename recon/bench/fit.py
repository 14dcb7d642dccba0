"""(a) The wall clock of a complete ``python -m recon fit``: what a user of the command line waits for.

Each fit runs in its own process, exactly as typed (``--frames`` / ``--size`` at the CLI's defaults),
and is timed from just before the process starts to its exit: imports, target views, every step,
the live extras, the final full score, and every file (mesh, history, config, turntable and
timelapse videos). The tutorial recipes, which take hours on a CPU, are stopped at their budget
with Ctrl-C (SIGINT), which the CLI answers by stopping after the step under way, scoring the result
and writing every file, as it would for a user. ``RECON_RUN_MAX_SECONDS`` cannot serve here: the
CLI refuses a run whose estimate exceeds it, and ``--force`` drops the limit altogether.

Peak memory is the child's own (``wait4``'s resource usage), not this process's.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .common import GB, ROOT

#: How long a fit may take to stop, score and write its files after the Ctrl-C, as a multiple of its
#: budget (at least 5 minutes: the tutorial NeRF's turntable alone takes minutes on a CPU).
GRACE_FACTOR = 1.0
MIN_GRACE_S = 300.0


def fit_command(method: str, preset: str, out: Path, device: torch.device, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "recon", "fit", "--method", method, "--target", "cow", "--preset", preset,
            "--out", str(out), "--device", str(device), "--quiet", *extra]


def _wait(proc: subprocess.Popen, t0: float, cap_s: float) -> tuple[int, Any, float | None, bool]:
    """Reap `proc` (exit status, its resource usage), interrupting it at `cap_s` seconds after `t0`
    and killing it if it has not ended a grace period later: (status, rusage, interrupted at, killed)."""
    interrupted_at, killed = None, False
    grace = max(MIN_GRACE_S, GRACE_FACTOR * cap_s)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            return proc.returncode, usage, interrupted_at, killed
        now = time.time() - t0
        if interrupted_at is None and now >= cap_s:
            proc.send_signal(signal.SIGINT)
            interrupted_at = now
        elif interrupted_at is not None and not killed and now >= interrupted_at + grace:
            proc.kill()
            killed = True
        time.sleep(0.1)


def read_outputs(out: Path, metric: str) -> dict[str, Any]:
    """What a finished fit wrote: the final score (the config's ``final_score``, else the last full
    score in the history CSV), iterations, state, settings, and the step-only seconds per iteration."""
    found: dict[str, Any] = {"final_score": {}, "iterations": None, "state": None, "settings": None,
                             "s_per_iteration": None}
    config = next(iter(sorted(out.glob("*_config.json"))), None)
    if config is not None:
        data = json.loads(config.read_text())
        found.update(final_score=data.get("final_score") or {}, iterations=data.get("iterations_run"),
                     state=data.get("state"), settings=data.get("settings"))
    history = next(iter(sorted(out.glob("*_history.csv"))), None)
    if history is not None:
        with open(history, newline="") as fh:
            rows = list(csv.DictReader(fh))
        steps = [r for r in rows if r.get("total")]  # loss rows ("time": seconds of steps so far)
        if steps and steps[-1].get("time"):
            found["s_per_iteration"] = float(steps[-1]["time"]) / max(int(steps[-1]["iteration"]), 1)
            found["iterations"] = found["iterations"] or int(steps[-1]["iteration"])
        scored = [r for r in rows if r.get(metric)]
        if metric not in found["final_score"] and scored:
            found["final_score"] = {metric: float(scored[-1][metric])}
    return found


def _answer_ctrl_c() -> None:
    """In the child before it starts: Ctrl-C back to its default. A benchmark started in the background
    (``nohup ... &``) ignores SIGINT, its children would inherit that, and the cap would never stop a fit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def fit_run(method: str, preset: str, workdir: Path, cap_s: float, device: torch.device, metric: str, *,
            extra: Sequence[str] = (), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``python -m recon fit`` for `method` / `preset` into a fresh folder under `workdir`; see the
    module's docstring. Returns the measurement (seconds from process start, files, final score)."""
    out = workdir / f"{method}_{preset}".replace(" ", "_")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = fit_command(method, preset, out, device, extra)
    log_path = out.with_suffix(".log")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RECON_RUN_MAX_SECONDS", None)  # the cap is the benchmark's Ctrl-C, the same for every fit
    log(f"[{method} {preset}] python -m recon fit ... (stopped with Ctrl-C at {cap_s:.0f} s)")
    with open(log_path, "w") as fh:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                preexec_fn=_answer_ctrl_c)
        code, usage, interrupted_at, killed = _wait(proc, t0, cap_s)
        wall = time.time() - t0
    text = log_path.read_text(errors="replace")
    files = sorted(p for p in out.iterdir() if p.is_file())
    found = read_outputs(out, metric)
    estimate = next((line.split("estimate", 1)[1].strip() for line in text.splitlines() if " estimate " in line), None)
    result = dict(method=method, preset=preset, command=" ".join(cmd[1:]), wall_s=wall,
                  last_file_s=max((p.stat().st_mtime for p in files), default=t0) - t0 if files else None,
                  exit_code=code, interrupted_s=interrupted_at, killed=killed,
                  files={p.name: p.stat().st_size for p in files}, estimate=estimate,
                  peak_rss_gb=usage.ru_maxrss * 1024 / GB, started=t0, **found)
    if code != 0:
        result["log_tail"] = text[-2000:]
    score = found["final_score"].get(metric)
    log(f"[{method} {preset}] fit: {wall:.1f} s to exit (code {code}), {len(files)} files, "
        f"{found['iterations']} iterations, {metric} {score if score is None else f'{score:.5g}'}")
    return result
