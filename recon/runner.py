"""One worker thread per run: the step loop, pause/stop, live edits, budgets, and what a watcher reads.

Only the worker thread touches tensors. Everybody else reads a run through :meth:`Run.poll`, an
immutable :class:`RunView` of its state and of the loss, metric and event rows that are new since
the watcher's last look, plus the sequence number of the latest snapshot (:meth:`Run.latest_snapshot`).

A :class:`TimeShare` decides when the worker may spend time on extras a watcher wants (a live
estimate of the held-out quality, snapshots for the page and the timelapse): each kind gets at most
its share of the run's time. When the run ends (done, or stopped) the worker scores the result once
with the method's full evaluation. A Stop is seen at once: the view says "stopping after this
step (about N s)" while a long step finishes, and anything chunked (target renders, evaluation,
snapshots) is abandoned at its next chunk (:mod:`recon.worker`).
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import math
import threading
import time
import traceback
import weakref
from typing import Any, Callable

import torch

from .budget import (
    EVAL_BUDGET,
    EVAL_CADENCE_S,
    SNAPSHOT_BUDGET,
    TIMELAPSE_FRAMES,
    Limits,
    RunSlots,
    TimeShare,
    is_oom,
    resident_bytes,
)
from .methods.base import Method, Snapshot
from .metrics import LIVE
from .params import validate
from .runlog import FINISHED, Cursor, RunLog, RunView
from .worker import Interrupted, watching

_tickets = iter(range(1, 2**62))
_started: weakref.WeakSet[Run] = weakref.WeakSet()  # every run whose worker was started
_ticket_lock = threading.Lock()


def _next_ticket() -> int:
    with _ticket_lock:
        return next(_tickets)


class Run:
    """A run of `method_cls` on `target` with `cfg`, working on its own thread.

    The worker keeps one row per iteration (``iteration``, ``time`` and every loss term), one row
    per evaluation (live estimates under ``live_<metric>``, the final full score under the metric's
    own key), the live edits with their iterations, and light timelapse frames.
    """

    def __init__(self, method_cls: type[Method], target: Any, cfg: Any, device: torch.device, *,
                 slots: RunSlots | None = None, limits: Limits = Limits(), eval_budget: float = EVAL_BUDGET,
                 snapshot_budget: float = SNAPSHOT_BUDGET, cadence: float = EVAL_CADENCE_S,
                 timelapse_frames: int = TIMELAPSE_FRAMES, score_at_end: bool = True) -> None:
        self.method_cls = method_cls
        self.target = target
        self.cfg = cfg  # replaced by live edits; initial_cfg keeps what the run started with
        self.initial_cfg = cfg
        self.device = device
        self.slots = slots
        self.limits = limits
        self.total = int(cfg.iterations)
        self.ticket = _next_ticket()
        self.share = TimeShare({"eval": eval_budget, "snapshot": snapshot_budget}, cadence=cadence,
                               min_gap={"eval": 0.2})  # a live point per tiny step would flood the chart
        self.score_at_end = score_at_end
        self.log = RunLog(self.total)
        self.timelapse: list[Snapshot] = []
        # A frame every `_timelapse_every` iterations (and at iteration 0 and the last), so at most ~N frames.
        self._timelapse_every = max(1, math.ceil(self.total / timelapse_frames)) if timelapse_frames > 0 else 0
        self._lock = threading.Lock()  # the pending live edits
        self._settled = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._halt_reason = ""  # why the worker stops by itself (a budget), for the message
        self._resume = threading.Event()
        self._resume.set()
        self._want_snapshot = threading.Event()
        self._want_snapshot.set()
        self._want_full = threading.Event()
        self._pending: dict[str, Any] = {}
        self._method: Method | None = None  # kept after a run ends, for turntables and exports
        self._result_lock = threading.Lock()
        self._memory_base = 0
        self._thread = threading.Thread(target=self._work, name=f"recon-run-{self.ticket}", daemon=True)

    # --- control (any thread; each returns at once) ------------------------------------------
    def start(self) -> Run:
        _started.add(self)
        self._thread.start()
        return self

    def stop(self, reason: str = "") -> None:
        """Stop after the step under way (long chunked work is abandoned at once); `reason` becomes
        the run's closing message."""
        if reason and not self._halt_reason:
            self._halt_reason = reason
        self._stop.set()
        self._resume.set()

    def pause(self) -> None:
        if self.log.state not in FINISHED:
            self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    def close(self) -> None:
        """The watcher has gone: stop without scoring, and free the method once the worker has ended."""
        self._closed = True
        self.stop()
        with self._result_lock:
            self._method = None
        if not self.alive:
            _free(self.device)

    def join(self, timeout: float | None = None) -> bool:
        if self._thread.is_alive() or self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until the worker has ended (final score included); True if it has."""
        return self._settled.wait(timeout)

    def request_snapshot(self) -> None:
        """Ask the worker for a fresh snapshot when the time share allows."""
        self._want_snapshot.set()

    def request_full_evaluation(self) -> None:
        """Ask the worker for the full held-out score after its next step (not counted in the share)."""
        self._want_full.set()

    def update(self, **changes: Any) -> list[str]:
        """Queue live edits (weights, learning rates); they apply from the next step on.

        Returns messages for anything refused (unknown, not live, empty) or clamped.
        """
        new, messages = validate(type(self.cfg), changes, base=self.cfg, live_only=True)
        accepted = {k: getattr(new, k) for k in changes if hasattr(new, k) and getattr(new, k) != getattr(self.cfg, k)}
        if accepted:
            with self._lock:
                self._pending.update(accepted)
        return messages

    def has_pending(self, name: str) -> bool:
        with self._lock:
            return name in self._pending

    # --- reading (any thread) ---------------------------------------------------------------
    def latest_snapshot(self) -> tuple[int, Snapshot | None]:
        """The newest snapshot and its sequence number (changes whenever a new one arrives)."""
        return self.log.latest_snapshot()

    def poll(self, since: Cursor | None = None) -> RunView:
        """What has changed since `since` (everything when None), and the state now."""
        queued = self.slots is not None and self.log.state == "queued"
        return self.log.view(since, stopping=self._stop.is_set(), pausing=self.paused,
                             queue_position=self.slots.position(self.ticket) if queued else 0,
                             settled=self._settled.is_set())

    def with_result(self, fn: Callable[[Method], Any]) -> Any:
        """Call ``fn(method)`` on the finished run's method (turntables, exports); one caller at a time.

        Raises RuntimeError while the run is still going, or when it failed or was closed.
        """
        if not self._settled.is_set():
            raise RuntimeError("the run is still going; stop it first")
        with self._result_lock:
            if self._method is None:
                raise RuntimeError("this run has no result to use (it failed, or it was closed)")
            return fn(self._method)

    # --- the worker -------------------------------------------------------------------------
    def _interrupt_reason(self) -> str | None:
        """Why long work on the worker should be abandoned now, if it should (see recon.worker)."""
        if self._stop.is_set():
            return "stopped"
        over = self._over_budget()
        if over:
            self.stop(over)
        return over

    def _over_budget(self) -> str | None:
        return self.limits.breached(self.log.active_seconds(), self._memory_used)

    def _memory_used(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device)) - self._memory_base
        return resident_bytes() - self._memory_base

    def _work(self) -> None:
        acquired = False
        method = None
        with watching(self._interrupt_reason):
            try:
                if self.slots is not None:
                    acquired = self.slots.acquire(self.ticket, self._stop.is_set)
                    if not acquired:
                        self.log.set_state("stopped", "Stopped before it started.")
                        return
                if self.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(self.device)
                    self._memory_base = int(torch.cuda.memory_allocated(self.device))
                else:
                    self._memory_base = resident_bytes()
                self.log.set_state("setup", "Preparing (loading the target, rendering its views, building the model)...")
                t0 = time.perf_counter()
                method = self.method_cls(self.target, self.cfg, self.device)
                self.log.setup_s = time.perf_counter() - t0
                self.log.set_state("running", "")
                # iteration 0: a finite state to show even if the first step diverges (the timelapse's first frame)
                self._take_snapshot(method, timelapse=bool(self._timelapse_every))
                self._loop(method)
            except Interrupted:
                where = "during the setup" if method is None else f"at iteration {self.log.iteration}"
                self.log.set_state("stopped", self._halt_reason or f"Stopped {where}.")
            except Exception as exc:  # a failing method must never take the app down
                self._fail(method, exc)
            finally:
                if self.log.state not in FINISHED:
                    self.log.set_state("stopped", self._halt_reason or f"Stopped at iteration {self.log.iteration}.")
                try:
                    if method is not None and self.log.state in ("done", "stopped") and not self._closed:
                        self._score(method)
                finally:
                    if acquired:
                        self.slots.release(self.ticket)
                    keep = method is not None and self.log.state in ("done", "stopped") and not self._closed
                    with self._result_lock:
                        self._method = method if keep else None
                    del method
                    if not keep:
                        _free(self.device)
                    self._settled.set()

    def _fail(self, method: Method | None, exc: BaseException) -> None:
        if is_oom(exc):
            kept = method is not None and self.log.iteration > 0
            self.log.set_state("stopped" if kept else "error",
                      f"Out of memory on the {self.device.type.upper()} at iteration {self.log.iteration}"
                      + (": stopped, keeping what was fitted. " if kept else ". ")
                      + "Try a smaller size (image size, grid size, points) or fewer views per step.")
            gc.collect()
        elif method is not None and method.blew_up(exc):
            # e.g. sample_points_from_meshes refusing inf face areas: the same failure as a NaN loss
            self.log.set_state("error", f"The optimisation diverged after iteration {self.log.iteration}: the parameters "
                               f"blew up towards NaN/inf ({str(exc).splitlines()[0][:120]}). The last finite state is "
                               "kept. Try a lower learning rate or larger regulariser weights.")
        else:
            self.log.set_state("error", f"{type(exc).__name__} at iteration {self.log.iteration}: {exc}")
            traceback.print_exc()

    def _loop(self, method: Method) -> None:
        share = self.share
        tl_pending = False
        while self.log.iteration < self.total:
            if self._stop.is_set() or self._wait_while_paused():
                break
            over = self._over_budget()
            if over:
                self.stop(over)
                break
            self._apply_pending(method)
            t0 = time.perf_counter()
            self.log.step_started()
            terms = method.step()
            values = dict(zip(terms, torch.stack(list(terms.values())).tolist()))
            dt = time.perf_counter() - t0
            share.add_work(dt)
            if not all(math.isfinite(v) for v in values.values()):
                bad = ", ".join(k for k, v in values.items() if not math.isfinite(v))
                self.log.set_state("error", f"The loss became NaN/inf at iteration {self.log.iteration + 1} ({bad}). "
                                   "The last finite state is kept. Try a lower learning rate or larger regulariser "
                                   "weights.")
                return
            self.log.step_done(dt, {"time": share.work, **values})
            if self._stop.is_set():  # no extras after a Stop: the final score comes with the scoring
                break
            last = self.log.iteration == self.total
            if self._want_full.is_set():
                self._want_full.clear()
                self._evaluate(method, live=False)
            if last or share.due("eval"):
                share.charge("eval", self._evaluate(method, live=True))
            tl_pending = tl_pending or bool(self._timelapse_every and self.log.iteration % self._timelapse_every == 0)
            if last or ((tl_pending or self._want_snapshot.is_set()) and share.due("snapshot")):
                t0 = time.perf_counter()
                self._take_snapshot(method, timelapse=tl_pending or last)
                share.charge("snapshot", time.perf_counter() - t0)
                tl_pending = False
        if self._stop.is_set():
            self.log.set_state("stopped", self._halt_reason or f"Stopped at iteration {self.log.iteration}.")
        else:
            self.log.set_state("done", f"Finished {self.log.iteration} iterations.")

    def _wait_while_paused(self) -> bool:
        """Block while paused; True if a Stop came meanwhile."""
        if self._resume.is_set():
            return False
        self.log.set_state("paused")
        while not self._resume.wait(0.05):
            pass
        if self._stop.is_set():
            return True
        self.log.set_state("running")
        return False

    def _evaluate(self, method: Method, live: bool) -> float:
        """Record one evaluation (live estimate or full score); returns what it cost in seconds."""
        t0 = time.perf_counter()
        metrics = method.evaluate(live=live)
        spent = time.perf_counter() - t0
        if metrics:
            row = {"iteration": self.log.iteration, "time": self.share.work,
                   **{(LIVE + k if live else k): v for k, v in metrics.items()}}
            self.log.add_metrics(row, final=None if live else metrics)
        return spent

    def _score(self, method: Method) -> None:
        """The full held-out score of the result, once, after the loop (not after a failure)."""
        if not self.score_at_end or self.log.iteration == 0:
            return
        self.log.set_scoring(True)
        try:
            with watching(lambda: "closed" if self._closed else None):  # a Stop no longer interrupts: the run is over
                self._evaluate(method, live=False)
        except Interrupted:
            pass
        except Exception as exc:  # scoring must not turn a finished run into a failure
            if not is_oom(exc):
                traceback.print_exc()
        finally:
            self.log.set_scoring(False)

    def _take_snapshot(self, method: Method, timelapse: bool = False) -> None:
        self._want_snapshot.clear()
        snap = method.snapshot()
        if not snap.is_finite():  # the parameters blew up: the page keeps showing the last finite state
            return
        snap.iteration = self.log.iteration
        self.log.set_snapshot(snap)
        if timelapse and not (self.timelapse and self.timelapse[-1].iteration == snap.iteration):
            self.timelapse.append(snap.frame(self.timelapse[-1] if self.timelapse else None))

    def _apply_pending(self, method: Method) -> None:
        with self._lock:
            changes, self._pending = self._pending, {}
        if not changes:
            return
        method.apply_live(changes)
        self.cfg = dataclasses.replace(self.cfg, **changes)
        for name, value in changes.items():
            self.log.add_event(name, value)


@atexit.register
def _close_at_exit(timeout: float = 30.0) -> None:
    """At interpreter exit, close every run and wait for its worker to leave torch: a daemon thread
    still inside torch's C++ when Python finalises aborts the whole process (std::terminate)."""
    runs = [run for run in list(_started) if run.alive]
    for run in runs:
        run.close()
    deadline = time.monotonic() + timeout
    for run in runs:
        run.join(max(0.0, deadline - time.monotonic()))


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

