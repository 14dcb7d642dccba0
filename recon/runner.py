"""One worker thread per run: the step loop, pause/stop, live edits, and a latest-snapshot slot.

Only the worker thread touches tensors. The UI reads :meth:`Run.status`, :attr:`Run.history` rows
and :meth:`Run.latest_snapshot`, all plain data. A :class:`RunSlots` object caps how many runs
step at once; the others wait in line and know their place.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import re
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable

import numpy as np
import torch

from .methods.base import Method, Snapshot
from .params import knobs

#: Fraction of a run's time that held-out evaluation may take (the rest is optimisation).
EVAL_BUDGET = 0.04
#: Fraction of a run's time that snapshots (page updates, timelapse frames) may take. With the
#: evaluation's, under #6's 10% limit on what live streaming may cost.
SNAPSHOT_BUDGET = 0.05
#: Most frames a run keeps for its optimisation timelapse (captured at evenly spaced iterations).
TIMELAPSE_FRAMES = 60

STATES = ("queued", "setup", "running", "paused", "done", "stopped", "error")
FINISHED = ("done", "stopped", "error")


class RunSlots:
    """A first-come, first-served cap on simultaneous runs, with queue positions."""

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


_tickets = iter(range(1, 2**62))
_ticket_lock = threading.Lock()


def _next_ticket() -> int:
    with _ticket_lock:
        return next(_tickets)


def _finite(snap: Snapshot) -> bool:
    """Whether a snapshot's geometry is free of NaN/inf (images are uint8, always finite)."""
    arrays = [snap.mesh.verts if snap.mesh is not None else None, snap.points.xyz if snap.points is not None else None]
    return all(np.isfinite(a).all() for a in arrays if a is not None)


#: Parameters beyond this magnitude have blown up: float32 products of three such numbers (areas,
#: volumes) overflow, and no method's scene-scale parameters legitimately get near it.
_BLOWN_UP = 1e12


def _diverged(method: Method, exc: BaseException) -> bool:
    """Whether `exc` comes from parameters that blew up (non-finite or huge, or an error saying so)."""
    if re.search(r"\b(nan|inf|infinity)\b", str(exc), re.IGNORECASE):
        return True
    opt = getattr(method, "optimizer", None)
    params = [p for g in opt.param_groups for p in g["params"]] if opt is not None else []
    with torch.no_grad():
        return any(not bool((p.abs() < _BLOWN_UP).all()) for p in params)  # False for NaN too


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()


class Run:
    """A run of `method_cls` on `asset` with `cfg`, stepping on its own thread.

    ``history`` holds one row per iteration (``iteration``, ``time`` and every loss term);
    ``metric_history`` one row per evaluation; ``events`` the live edits, each with its iteration;
    ``timelapse`` light snapshots (mesh and/or the "render" image only) at evenly spaced iterations,
    turned into a video by :mod:`recon.export` after the run.
    """

    def __init__(self, method_cls: type[Method], asset: Any, cfg: Any, device: torch.device,
                 slots: RunSlots | None = None, eval_budget: float = EVAL_BUDGET,
                 timelapse_frames: int = TIMELAPSE_FRAMES, snapshot_budget: float = SNAPSHOT_BUDGET) -> None:
        self.method_cls = method_cls
        self.asset = asset
        self.cfg = cfg  # replaced by live edits; initial_cfg keeps what the run started with
        self.initial_cfg = cfg
        self.device = device
        self.slots = slots
        self.eval_budget = eval_budget
        self.snapshot_budget = snapshot_budget
        self.total = int(getattr(cfg, "iterations"))
        self.ticket = _next_ticket()
        self.history: list[dict[str, float]] = []
        self.metric_history: list[dict[str, float]] = []
        self.events: list[dict[str, Any]] = []
        self.timelapse: list[Snapshot] = []
        # A frame every `_timelapse_every` iterations (and at iteration 0 and the last), so at most ~N frames.
        self._timelapse_every = (max(1, math.ceil(self.total / timelapse_frames)) if timelapse_frames > 0
                                 else 0)
        self.state = "queued"
        self.message = ""
        self.iteration = 0
        self.started_at: float | None = None  # when stepping began (after setup)
        self.setup_seconds = 0.0
        self.step_seconds = 0.0  # time in step() only
        self.ended_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        self._want_snapshot = threading.Event()
        self._want_snapshot.set()
        self._pending: dict[str, Any] = {}
        self._snapshot: Snapshot | None = None
        self._snapshot_seq = 0
        self._method: Method | None = None  # kept after a run ends, for turntables and exports
        self._result_lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name=f"recon-run-{self.ticket}", daemon=True)

    # --- control (any thread) ---------------------------------------------------------------
    def start(self) -> Run:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._resume.set()

    def pause(self) -> None:
        if self.state in ("running", "setup", "queued"):
            self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def request_snapshot(self) -> None:
        """Ask the worker for a fresh snapshot after its next step."""
        self._want_snapshot.set()

    def update(self, **changes: Any) -> list[str]:
        """Queue live edits (weights, learning rate); they apply from the next step on.

        Returns messages for anything refused (unknown, not live, or clamped).
        """
        by_name = {k.name: k for k in knobs(type(self.cfg))}
        accepted, messages = {}, []
        for name, value in changes.items():
            k = by_name.get(name)
            if k is None:
                messages.append(f"unknown setting {name!r} ignored")
            elif not k.live:
                messages.append(f"{k.label} cannot change while a run is going")
            else:
                accepted[name], msg = k.clamp(value)
                if msg:
                    messages.append(msg)
        if accepted:
            with self._lock:
                self._pending.update(accepted)
        return messages

    def has_pending(self, name: str) -> bool:
        """Whether a live edit of `name` waits for the next step."""
        with self._lock:
            return name in self._pending

    # --- reading (any thread) ---------------------------------------------------------------
    def latest_snapshot(self) -> tuple[int, Snapshot | None]:
        """The newest snapshot and its sequence number (changes whenever a new one arrives)."""
        with self._lock:
            return self._snapshot_seq, self._snapshot

    def queue_position(self) -> int:
        return self.slots.position(self.ticket) if self.slots is not None and self.state == "queued" else 0

    def status(self) -> dict[str, Any]:
        """A plain-data summary for the status line."""
        now = time.perf_counter()
        with self._lock:
            it, state = self.iteration, self.state
            last = dict(self.history[-1]) if self.history else {}
            metrics = dict(self.metric_history[-1]) if self.metric_history else {}
        elapsed = 0.0
        if self.started_at is not None:
            elapsed = (self.ended_at or now) - self.started_at
        rate = it / elapsed if elapsed > 0 and it else 0.0
        eta = (self.total - it) / rate if rate > 0 and state in ("running", "paused") else None
        return dict(state=state, iteration=it, total=self.total, its_per_s=rate, elapsed=elapsed, eta=eta,
                    setup_s=self.setup_seconds, message=self.message, loss=last, metrics=metrics,
                    paused=self.paused, queue_position=self.queue_position())

    # --- the worker -------------------------------------------------------------------------
    def _set(self, state: str, message: str | None = None) -> None:
        with self._lock:
            self.state = state
            if message is not None:
                self.message = message

    def _work(self) -> None:
        acquired = False
        method = None
        try:
            if self.slots is not None:
                acquired = self.slots.acquire(self.ticket, self._stop.is_set)
                if not acquired:
                    self._set("stopped", "Stopped before it started.")
                    return
            self._set("setup", "Preparing (loading the target, building the model)...")
            t0 = time.perf_counter()
            method = self.method_cls(self.asset, self.cfg, self.device)
            self.setup_seconds = time.perf_counter() - t0
            self.started_at = time.perf_counter()
            self._set("running", "")
            # The first held-out evaluation comes right after the first step (its budget starts empty), so that
            # the first loss point is not kept waiting behind it.
            # iteration 0: a finite state to show even if the first step diverges (and the timelapse's first frame)
            self._take_snapshot(method, timelapse=bool(self._timelapse_every))
            self._want_snapshot.set()
            self._loop(method)
        except Exception as exc:  # a failing method must never take the app down
            if _is_oom(exc):
                self._set("error", f"Out of memory on {self.device.type.upper()} at iteration {self.iteration}: "
                                   "try a smaller size (image size, grid size, points) or fewer views.")
            elif method is not None and _diverged(method, exc):
                # e.g. sample_points_from_meshes refusing inf face areas: the same failure as a NaN loss
                self._set("error", f"The optimisation diverged after iteration {self.iteration}: the parameters "
                                   f"blew up towards NaN/inf ({str(exc).splitlines()[0][:120]}). The last finite state is "
                                   "kept. Try a lower learning rate or larger regulariser weights.")
            else:
                self._set("error", f"{type(exc).__name__} at iteration {self.iteration}: {exc}")
                traceback.print_exc()
        finally:
            self.ended_at = time.perf_counter()
            if acquired:
                self.slots.release(self.ticket)
            self._method = method if self.state in ("done", "stopped") else None
            del method
            if self._method is None:
                self._free()

    def _free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def with_result(self, fn: Callable[[Method], Any]) -> Any:
        """Call ``fn(method)`` on the finished run's method (turntables, exports); one caller at a time.

        Raises RuntimeError while the run is still going, or when it failed or was closed.
        """
        if self.alive:
            raise RuntimeError("the run is still going; stop it first")
        with self._result_lock:
            if self._method is None:
                raise RuntimeError("this run has no result to use (it failed, or it was closed)")
            return fn(self._method)

    def close(self) -> None:
        """Stop the run and release its method and memory (the session has moved on)."""
        self.stop()
        self.join(10)
        with self._result_lock:
            self._method = None
        self._free()

    def _loop(self, method: Method) -> None:
        eval_spent, steps_since_eval = 0.0, 0.0
        snap_spent, steps_since_snap, tl_pending = 0.0, 0.0, False
        while self.iteration < self.total:
            if self._stop.is_set():
                break
            if not self._resume.is_set():
                self._set("paused")
                while not self._resume.wait(0.05):
                    if self._stop.is_set():
                        break
                if self._stop.is_set():
                    break
                self._set("running")
            self._apply_pending(method)
            t0 = time.perf_counter()
            terms = method.step()
            values = dict(zip(terms, torch.stack(list(terms.values())).tolist()))
            dt = time.perf_counter() - t0
            self.step_seconds += dt
            steps_since_eval += dt
            steps_since_snap += dt
            if not all(math.isfinite(v) for v in values.values()):
                bad = ", ".join(k for k, v in values.items() if not math.isfinite(v))
                self._set("error", f"The loss became NaN/inf at iteration {self.iteration + 1} ({bad}). "
                                   "The last finite state is kept. Try a lower learning rate or larger regulariser "
                                   "weights.")
                return
            row = {"iteration": self.iteration + 1, "time": time.perf_counter() - self.started_at, **values}
            with self._lock:
                self.history.append(row)
                self.iteration += 1
            last = self.iteration == self.total
            # Held-out evaluation takes at most `eval_budget` of the time: wait until the steps since the
            # last evaluation have taken (1 - budget) / budget times what that evaluation cost.
            if last or steps_since_eval * self.eval_budget >= eval_spent * (1 - self.eval_budget):
                eval_spent = self._evaluate(method)
                steps_since_eval = 0.0
            tl_pending = tl_pending or bool(self._timelapse_every and self.iteration % self._timelapse_every == 0)
            # Snapshots (for the page and the timelapse) get the same kind of time budget as evaluation, so
            # that a method whose snapshot is expensive (a NeRF render) is not slowed down by a watcher.
            affordable = steps_since_snap * self.snapshot_budget >= snap_spent * (1 - self.snapshot_budget)
            if last or ((tl_pending or self._want_snapshot.is_set()) and affordable):
                t0 = time.perf_counter()
                self._take_snapshot(method, timelapse=tl_pending or last)
                snap_spent, steps_since_snap, tl_pending = time.perf_counter() - t0, 0.0, False
        if self._stop.is_set():
            self._take_snapshot(method, timelapse=bool(self._timelapse_every))
            if self.iteration and (not self.metric_history or self.metric_history[-1]["iteration"] != self.iteration):
                self._evaluate(method)  # the quality the run ends with, for its history and exports
            self._set("stopped", f"Stopped at iteration {self.iteration}.")
        else:
            self._set("done", f"Finished {self.iteration} iterations.")

    def _evaluate(self, method: Method) -> float:
        t0 = time.perf_counter()
        metrics = method.evaluate()
        spent = time.perf_counter() - t0
        if metrics:
            row = {"iteration": self.iteration, "time": time.perf_counter() - self.started_at, **metrics}
            with self._lock:
                self.metric_history.append(row)
        return spent

    def _take_snapshot(self, method: Method, timelapse: bool = False) -> None:
        self._want_snapshot.clear()
        snap = method.snapshot()
        if not _finite(snap):  # the parameters blew up: the page keeps showing the last finite state
            return
        snap.iteration = self.iteration
        with self._lock:
            self._snapshot = snap
            self._snapshot_seq += 1
        if timelapse and not (self.timelapse and self.timelapse[-1].iteration == snap.iteration):
            self._keep_frame(snap)

    def _keep_frame(self, snap: Snapshot) -> None:
        """Keep only what a timelapse frame needs: the mesh (its faces shared when unchanged) or the render."""
        mesh = snap.mesh
        prev = self.timelapse[-1].mesh if self.timelapse else None
        if mesh is not None and prev is not None and np.array_equal(mesh.faces, prev.faces):
            mesh = dataclasses.replace(mesh, faces=prev.faces)
        images = {"render": snap.images["render"]} if "render" in snap.images else {}
        self.timelapse.append(Snapshot(iteration=snap.iteration, mesh=mesh, images=images, view=snap.view))

    def _apply_pending(self, method: Method) -> None:
        with self._lock:
            changes, self._pending = self._pending, {}
        if not changes:
            return
        method.apply_live(changes)
        self.cfg = dataclasses.replace(self.cfg, **changes)
        with self._lock:
            for name, value in changes.items():
                self.events.append({"iteration": self.iteration, "name": name, "value": value})
