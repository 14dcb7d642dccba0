"""What one server shares between its sessions: the device, the cap on runs working at once, the
limits of one run, and how long sessions and paused runs may hold on to things.

Everything comes from the environment, read once when the page is built (never at import):

- ``RECON_MAX_RUNS``: runs that work at the same time (default 1 on a CPU, 4 with a GPU); more wait
  in line.
- ``RECON_RUN_MEMORY_GB``: memory one run may use (default: what the machine has free when the
  server starts, less a margin, divided by ``RECON_MAX_RUNS``).
- ``RECON_RUN_MAX_SECONDS``: active seconds one run may take (default: no limit; the Dockerfile
  sets one for public hosting).
- ``RECON_SESSION_TTL``: seconds without activity after which a session is released (default 900).
- ``RECON_PAUSE_TIMEOUT``: seconds a paused run keeps its slot while others wait (default 600).
"""

from __future__ import annotations

import os
import time
import weakref
from pathlib import Path
from typing import Any, Callable

import torch

from .budget import Limits, RunSlots
from .device import describe, pick_device

GB = 2**30


def _env_number(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"{name}={raw!r} must be positive")
    return value


def _cgroup_free() -> int | None:
    """Bytes this container may still allocate under its cgroup memory limit, if it has one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0, int(limit) - usage)
    return None


def free_memory(device: torch.device) -> int:
    """Bytes free for runs on `device` now: GPU memory, or the machine's (or container's) available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    cgroup = _cgroup_free()
    known = [v for v in (available, cgroup) if v is not None]
    return min(known) if known else 4 * GB


def run_limits(max_runs: int, device: torch.device) -> Limits:
    """One run's limits from the environment; the memory default shares what is free among the slots."""
    memory_gb = _env_number("RECON_RUN_MEMORY_GB", None)
    seconds = _env_number("RECON_RUN_MAX_SECONDS", None)
    if memory_gb is not None:
        memory, source = memory_gb * GB, "RECON_RUN_MEMORY_GB"
    else:
        free = free_memory(device)
        memory = max(0.5 * GB, (free - max(1 * GB, 0.1 * free)) / max_runs)
        source = f"{free / GB:.1f} GB free at start, less a margin, shared by {max_runs} run slot{'s' * (max_runs > 1)}"
    if seconds is not None:
        source += "; RECON_RUN_MAX_SECONDS"
    return Limits(memory_bytes=memory, seconds=seconds, source=source)


class Server:
    """The shared part of a running app. Sessions (:class:`recon.workbench.Workbench`) hold one each."""

    def __init__(self, max_runs: int | None = None, device: str | torch.device | None = None,
                 limits: Limits | None = None) -> None:
        self.device = pick_device(str(device) if device is not None else None)
        default_runs = 4 if self.device.type == "cuda" else 1
        self.max_runs = int(max_runs or _env_number("RECON_MAX_RUNS", default_runs))
        self.slots = RunSlots(self.max_runs)
        self.limits = limits or run_limits(self.max_runs, self.device)
        self.session_ttl = float(_env_number("RECON_SESSION_TTL", 900.0))
        self.pause_timeout = float(_env_number("RECON_PAUSE_TIMEOUT", 600.0))
        self.device_name = describe(self.device)
        #: How many runs wait in line for a slot (set by the page: Gradio's queue knows).
        self.waiting: Callable[[], int] = lambda: 0
        self.sessions: weakref.WeakSet[Any] = weakref.WeakSet()  # open sessions, for diagnostics and tests

    def shutdown(self, timeout: float = 30.0) -> None:
        """Close every session and wait (up to `timeout` s in all) for their runs' workers to end, so that
        no worker is inside torch when the process exits."""
        sessions = list(self.sessions)
        runs = [wb.run for wb in sessions if wb.run is not None]
        for wb in sessions:
            wb.close()
        deadline = time.monotonic() + timeout
        for run in runs:
            run.wait_settled(max(0.0, deadline - time.monotonic()))

    def fits(self, est: Any) -> bool:
        """Whether a run priced at `est` (:class:`recon.cost.Estimate`) is within one run's limits."""
        lim = self.limits
        return ((lim.memory_bytes is None or est.memory_bytes <= lim.memory_bytes)
                and (lim.seconds is None or est.total_seconds <= lim.seconds))

    def describe_limits(self) -> str:
        lim = self.limits
        parts = [f"{lim.memory_bytes / GB:.1f} GB" if lim.memory_bytes else "no memory limit",
                 f"{lim.seconds / 60:.0f} min" if lim.seconds else "no time limit"]
        return f"{' and '.join(parts)} per run ({self.max_runs} at a time)"
