"""How a run's time and memory are shared and capped: the time share between optimisation and the
extras a watcher wants, the per-run limits a server sets, and the cap on runs working at once.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

#: Fraction of a run's time that the live estimate of the held-out quality may take.
EVAL_BUDGET = 0.05
#: Fraction of a run's time that snapshots (page updates, timelapse frames) may take.
SNAPSHOT_BUDGET = 0.05
#: The longest the live quality chart waits between points, in seconds of run time, when the
#: estimate is cheap enough for the budget to allow it.
EVAL_CADENCE_S = 10.0
#: Most frames a run keeps for its optimisation timelapse (captured at evenly spaced iterations).
TIMELAPSE_FRAMES = 60

class TimeShare:
    """Shares a run's time between optimisation and extras, each kind within its budget.

    An extra of kind `k` is due when the optimisation time since the last one, times ``budget[k]``,
    covers its typical cost times ``1 - budget[k]``: then over a run the extras take at most their
    fraction of its time. The typical cost is the cheapest of the recent ones, not counting the
    first, which pays one-time work (allocations, caches); until a second one is measured, the
    first counts for no more than the cadence allows, so one slow start cannot silence a kind for
    long. ``min_gap`` (seconds, by kind) keeps a cheap extra from running after every tiny step.
    """

    def __init__(self, budgets: dict[str, float], cadence: float = EVAL_CADENCE_S,
                 min_gap: dict[str, float] | None = None) -> None:
        self.budgets = dict(budgets)
        self.cadence = cadence
        self.min_gap = min_gap or {}
        self.work = 0.0  # seconds of optimisation so far
        self._last: dict[str, float | None] = {k: None for k in budgets}
        self._costs: dict[str, list[float]] = {k: [] for k in budgets}

    def add_work(self, seconds: float) -> None:
        self.work += seconds

    def typical(self, kind: str) -> float:
        costs, b = self._costs[kind], self.budgets[kind]
        if not costs or b >= 1:  # a budget of the whole run: never waits
            return 0.0
        if len(costs) == 1:
            return min(costs[0], self.cadence * b / (1 - b))
        return min(costs[1:][-3:])

    def due(self, kind: str) -> bool:
        last = self._last[kind]
        if last is None:
            return True
        since, b = self.work - last, self.budgets[kind]
        return since >= self.min_gap.get(kind, 0.0) and since * b >= self.typical(kind) * (1 - b)

    def charge(self, kind: str, seconds: float) -> None:
        self._last[kind] = self.work
        self._costs[kind].append(seconds)
        del self._costs[kind][:-8]

    def spent(self, kind: str) -> float:
        return sum(self._costs[kind])


@dataclass(frozen=True)
class Limits:
    """What one run may use; beyond it the run is stopped (and refused beforehand when priced over)."""

    memory_bytes: float | None = None  # growth of the process (CPU) or peak CUDA allocation (GPU)
    seconds: float | None = None  # active time: setup, steps and extras, not pauses
    source: str = ""  # where the limits come from, for the messages ("RECON_RUN_MAX_SECONDS=600")

    def breached(self, active_seconds: float, memory_used: Callable[[], int]) -> str | None:
        """Why a run that has worked `active_seconds` and grown by `memory_used()` bytes must stop, if it must."""
        where = f"; {self.source}" if self.source else ""
        if self.seconds is not None and active_seconds > self.seconds:
            return f"Stopped at the time limit ({self.seconds:.0f} s of work per run on this server{where}). " \
                   "What was fitted is kept."
        if self.memory_bytes is not None:
            used = memory_used()
            if used > self.memory_bytes:
                return (f"Stopped at the memory limit: the run used {used / 2**30:.1f} GB, over the "
                        f"{self.memory_bytes / 2**30:.1f} GB a run may use on this server{where}. What was "
                        "fitted is kept; try smaller images, grids or fewer views per step.")
        return None


class RunSlots:
    """A first-come, first-served cap on runs that work at once (setup, steps, final scoring)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, int(capacity))
        self._cond = threading.Condition()
        self._active: set[int] = set()
        self._waiting: deque[int] = deque()

    def acquire(self, ticket: int, cancelled: Callable[[], bool]) -> bool:
        """Block until `ticket` may run (True) or `cancelled()` becomes true (False)."""
        with self._cond:
            self._waiting.append(ticket)
            try:
                while True:
                    if cancelled():
                        return False
                    if len(self._active) < self.capacity and self._waiting[0] == ticket:
                        self._waiting.popleft()
                        self._active.add(ticket)
                        self._cond.notify_all()
                        return True
                    self._cond.wait(timeout=0.1)
            finally:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                    self._cond.notify_all()

    def release(self, ticket: int) -> None:
        with self._cond:
            self._active.discard(ticket)
            self._cond.notify_all()

    def position(self, ticket: int) -> int:
        """1-based place in the waiting line; 0 when running or not waiting."""
        with self._cond:
            try:
                return self._waiting.index(ticket) + 1
            except ValueError:
                return 0

    @property
    def active(self) -> int:
        with self._cond:
            return len(self._active)


def is_oom(exc: BaseException) -> bool:
    """CUDA out of memory, or a CPU allocation that failed ("can't allocate memory")."""
    text = str(exc).lower()
    return (isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text
            or "can't allocate memory" in text or "cannot allocate memory" in text)


def resident_bytes() -> int:
    """This process's resident memory now."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096
    except OSError:  # not Linux: the lifetime peak is the best there is
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
