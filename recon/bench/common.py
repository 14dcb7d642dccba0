"""What every part of the benchmark shares: its budgets, which presets it compares, memory and load
sampling, and the description of the machine (figures mean little without the machine and its load)."""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..budget import resident_bytes
from ..device import describe
from ..methods import device_preset, get_method

#: The repository root: ``python -m recon`` runs from here, and ``app.py`` / ``page.py`` live here.
ROOT = Path(__file__).resolve().parents[2]
#: The preset that reproduces a PyTorch3D tutorial's settings.
TUTORIAL = "Tutorial"
GB = 2**30


@dataclass(frozen=True)
class Budgets:
    """How long each side may take, and how often the benchmark scores a streamed run.

    The tutorial recipes take hours on a CPU, so they are stopped at `tutorial_s` (of the user's
    time: the wall clock, less the benchmark's own evaluations). recon's defaults get the same cap,
    as a safety: a default that needs longer is not sooner than the capped tutorial anyway.
    """

    tutorial_s: float = 600.0
    recon_s: float = 600.0
    quality_at_s: float = 60.0  # the "quality after a minute" column
    score_every_s: float = 10.0  # the benchmark's full evaluations of a streamed run (at least)
    page_window_s: float = 30.0  # how long chart updates are counted in the browser

    @classmethod
    def for_run(cls, quick: bool) -> Budgets:
        """The full benchmark, or with `quick` a smoke run of a few minutes: every budget / 10."""
        if not quick:
            return cls()
        return cls(tutorial_s=60.0, recon_s=60.0, quality_at_s=6.0, score_every_s=1.0, page_window_s=10.0)

    def cap(self, role: str) -> float:
        return self.tutorial_s if role == "tutorial" else self.recon_s

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def sides(method: str, device_type: str) -> list[tuple[str, str]]:
    """(role, preset) pairs measured for `method`: the tutorial recipe where the method has one, and
    recon's default on this device (the preset the page and the CLI start with)."""
    cls = get_method(method)
    pairs = [("tutorial", TUTORIAL)] if TUTORIAL in cls.presets else []
    return pairs + [("recon", device_preset(method, device_type))]


def quality_metric(method: str) -> tuple[str, bool]:
    """The headline quality measure of `method` (its first metric) and whether higher is better."""
    cls = get_method(method)
    key = next(iter(cls.metrics))
    return key, cls.metrics[key].higher_is_better


class PeakRSS:
    """Samples this process's resident memory in the background; `peak` is the largest seen (bytes)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, resident_bytes())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = resident_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())


class LoadSampler:
    """The machine's 1-minute load average, sampled through the whole benchmark: other work on the
    machine slows every figure, so each measurement records the load it ran under."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (time.time(), load)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-load", daemon=True)

    def _sample(self) -> None:
        while True:
            try:
                self.samples.append((time.time(), os.getloadavg()[0]))
            except OSError:  # no load average on this platform
                return
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, t0: float, t1: float | None = None) -> dict[str, float] | None:
        """min / mean / max of the load between two ``time.time()`` stamps (to now when `t1` is None)."""
        t1 = time.time() if t1 is None else t1
        xs = [v for t, v in self.samples if t0 - self.interval <= t <= t1]
        if not xs:
            return None
        return {"min": min(xs), "mean": sum(xs) / len(xs), "max": max(xs)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    return None


def machine(device: torch.device) -> dict[str, Any]:
    """The machine in the report's words: CPU model, cores, memory, device, versions, date."""
    try:
        import pytorch3d

        p3d = pytorch3d.__version__
    except ImportError:
        p3d = None
    return dict(cpu=_cpu_model(), cores=os.cpu_count(), torch_threads=torch.get_num_threads(), memory_gb=_memory_gb(),
                device=describe(device), torch=torch.__version__, pytorch3d=p3d, python=sys.version.split()[0],
                platform=platform.platform(), date=time.strftime("%Y-%m-%d %H:%M"))
