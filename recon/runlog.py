"""What a run has recorded, and the views its watchers get of it.

The worker thread writes into a :class:`RunLog` (state, loss rows, evaluations, live edits, the
latest snapshot, step timings); the page, the CLI and the benchmark read it only through
:class:`RunView`, an immutable picture of one moment that also hands out the rows that are new
since the reader's last :class:`Cursor`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .budget import EVAL_BUDGET, SNAPSHOT_BUDGET
from .methods.base import Snapshot
from .metrics import LIVE

FINISHED = ("done", "stopped", "error")
#: States in which the run's clock runs (pauses and waiting in line do not count).
ACTIVE = ("setup", "running")


@dataclass(frozen=True)
class Cursor:
    """How many loss, metric and event rows a reader has seen."""

    losses: int = 0
    metrics: int = 0
    events: int = 0


@dataclass(frozen=True)
class RunView:
    """What a reader sees of a run at one moment; plain, immutable data."""

    state: str  # queued | setup | running | paused | pausing | stopping | done | stopped | error
    message: str
    iteration: int
    total: int
    elapsed: float  # active seconds: setup, steps and extras (pauses and waiting in line excluded)
    setup_s: float
    step_s: float | None  # typical seconds per step
    eta: float | None  # seconds left, while running
    queue_position: int
    losses: tuple[dict[str, float], ...]  # rows new since the cursor
    metrics: tuple[dict[str, float], ...]
    events: tuple[dict[str, Any], ...]
    snapshot_seq: int
    last_loss: dict[str, float]
    last_live: dict[str, float]  # the latest live estimate
    final: dict[str, float]  # the full score at the end ({} until scored)
    scoring: bool  # the final evaluation is under way
    settled: bool  # the worker has ended: nothing about this run changes any more
    cursor: Cursor

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


class RunLog:
    """A run's record, written by its worker and read by anybody (every access under one lock)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._lock = threading.Lock()
        self.state, self.message = "queued", ""
        self.iteration = 0
        self.setup_s = 0.0
        self.scoring = False
        self._losses: list[dict[str, float]] = []
        self._metrics: list[dict[str, float]] = []
        self._events: list[dict[str, Any]] = []
        self._final: dict[str, float] = {}
        self._active_s = 0.0  # active time banked before the current stretch
        self._stretch_from: float | None = None  # when the current active stretch began
        self._step_from: float | None = None  # when the step under way began
        self._step_times: deque[float] = deque(maxlen=10)
        self._snapshot: Snapshot | None = None
        self._snapshot_seq = 0

    # --- writing (the worker) ----------------------------------------------------------------
    def set_state(self, state: str, message: str | None = None) -> None:
        """A new state; the run's clock starts and stops with the active states."""
        with self._lock:
            now = time.perf_counter()
            if state in ACTIVE and self._stretch_from is None:
                self._stretch_from = now
            elif state not in ACTIVE and self._stretch_from is not None:
                self._active_s += now - self._stretch_from
                self._stretch_from = None
            self.state = state
            if message is not None:
                self.message = message

    def step_started(self) -> None:
        with self._lock:
            self._step_from = time.perf_counter()

    def step_done(self, seconds: float, row: dict[str, float]) -> None:
        with self._lock:
            self._step_from = None
            self._step_times.append(seconds)
            self.iteration += 1
            self._losses.append({"iteration": self.iteration, **row})

    def add_metrics(self, row: dict[str, float], final: dict[str, float] | None = None) -> None:
        with self._lock:
            self._metrics.append(row)
            if final is not None:
                self._final = dict(final)

    def add_event(self, name: str, value: Any) -> None:
        with self._lock:
            self._events.append({"iteration": self.iteration, "name": name, "value": value})

    def set_snapshot(self, snap: Snapshot) -> None:
        with self._lock:
            self._snapshot = snap
            self._snapshot_seq += 1

    def set_scoring(self, scoring: bool) -> None:
        with self._lock:
            self.scoring = scoring

    # --- reading (any thread) ---------------------------------------------------------------
    def active_seconds(self) -> float:
        with self._lock:
            return self._active_s + (time.perf_counter() - self._stretch_from if self._stretch_from else 0.0)

    def latest_snapshot(self) -> tuple[int, Snapshot | None]:
        """The newest snapshot and its sequence number (changes whenever a new one arrives)."""
        with self._lock:
            return self._snapshot_seq, self._snapshot

    def view(self, since: Cursor | None, *, stopping: bool, pausing: bool, queue_position: int,
             settled: bool) -> RunView:
        """The run now, with the rows new since `since` (all when None). `stopping` / `pausing`: a Stop
        or Pause was asked for and is shown at once, with how long the step under way still takes."""
        since = since or Cursor()
        now = time.perf_counter()
        with self._lock:
            state, message, it = self.state, self.message, self.iteration
            losses = tuple(self._losses[since.losses:])
            metrics = tuple(self._metrics[since.metrics:])
            events = tuple(self._events[since.events:])
            cursor = Cursor(len(self._losses), len(self._metrics), len(self._events))
            last_loss = dict(self._losses[-1]) if self._losses else {}
            live = next((m for m in reversed(self._metrics) if any(k.startswith(LIVE) for k in m)), {})
            final, scoring, seq = dict(self._final), self.scoring, self._snapshot_seq
            elapsed = self._active_s + (now - self._stretch_from if self._stretch_from is not None else 0.0)
            step_s = float(np.median(self._step_times)) if self._step_times else None
            step_from = self._step_from
        left = max(0.0, step_s - (now - step_from)) if step_from is not None and step_s is not None else 0.0
        after = f" after this step (about {left:.0f} s)" if left >= 1.0 else ""
        if state not in FINISHED and stopping:
            state, message = "stopping", ("stopping: abandoning the setup" if state == "setup" else "stopping" + after)
        elif state == "running" and pausing:
            state, message = "pausing", "pausing" + after
        eta = None
        if state in ("running", "paused", "pausing") and step_s:
            eta = (self.total - it) * step_s / (1 - EVAL_BUDGET - SNAPSHOT_BUDGET)
        return RunView(state=state, message=message, iteration=it, total=self.total, elapsed=elapsed,
                       setup_s=self.setup_s, step_s=step_s, eta=eta, queue_position=queue_position, losses=losses,
                       metrics=metrics, events=events, snapshot_seq=seq, last_loss=last_loss, last_live=dict(live),
                       final=final, scoring=scoring, settled=settled, cursor=cursor)
