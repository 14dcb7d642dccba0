"""(b) A run as the page streams it, timed to quality as the full evaluation scores it.

The run is driven through :class:`recon.workbench.Workbench`, the page's own controller, ticking as
``page.run_stream`` does (the status, the loss and quality charts, the 3D view and rendered views at
the page's own intervals, live evaluation, timelapse frames), and every update is serialised as the
page's server would send it (figures to JSON, the views to PNG). The quality a user would see is scored by a side thread that
asks the runner for a full held-out evaluation (:meth:`recon.runner.Run.request_full_evaluation`)
every few seconds and at the "after a minute" mark.

Those extra evaluations are the benchmark's, not the user's: their time is taken out of the clock.
The runner records no duration, so for the length of the run the method's ``evaluate`` is wrapped
(:class:`EvalClock`) to time every full evaluation on the worker thread; one asked for by the
benchmark is told from the runner's own final score by the run's ``scoring`` flag. A score's time
is then the wall clock since Run at the start of its evaluation (the model it scores existed then)
less the benchmark's evaluations before it (:func:`recon.bench.summary.score_rows`). The tutorial
recipe is stopped when that clock reaches its budget.
"""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from typing import Any, Callable

import torch
from PIL import Image

from ..budget import Limits
from ..methods import get_method, preset_values
from ..runner import Run
from ..server import Server
from ..workbench import Update, Workbench
from .common import GB, PeakRSS
from .summary import own_eval_seconds, score_rows


class EvalClock:
    """Times every full evaluation of `cls` while in use (a context manager that wraps its ``evaluate``).

    ``evals`` holds one record per full evaluation, in order: ``start`` (perf_counter), ``seconds``
    (None while under way), ``bench`` (asked for by the benchmark, not the runner's final score),
    ``iteration`` and ``scores``. Live estimates pass through untimed: the page pays for them too.
    """

    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.run: Run | None = None  # set once the run exists: its `scoring` flag tells the final score
        self.evals: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._saved: Any = None

    def __enter__(self) -> EvalClock:
        self._saved = self.cls.__dict__.get("evaluate")
        original = self.cls.evaluate
        clock = self

        def evaluate(method: Any, live: bool = False) -> dict[str, float]:
            if live:
                return original(method, live=True)
            run = clock.run
            record = dict(start=time.perf_counter(), seconds=None, iteration=int(method.iteration),
                          bench=run is not None and not run.poll().scoring, scores={})
            with clock._lock:
                clock.evals.append(record)
            scores: dict[str, float] = {}
            try:
                scores = original(method, live=False)
                return scores
            finally:  # an evaluation cut short by a Stop still took its time; it has no scores
                with clock._lock:
                    record["seconds"] = time.perf_counter() - record["start"]
                    record["scores"] = dict(scores)

        self.cls.evaluate = evaluate
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            self.cls.evaluate = self._saved
        else:
            del self.cls.evaluate

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self.evals]

    def user_time(self, t0: float, now: float | None = None) -> float:
        """Seconds since `t0` less the benchmark's own evaluations (the one under way included)."""
        now = time.perf_counter() if now is None else now
        return now - t0 - own_eval_seconds(self.snapshot(), now)

    def bench_done(self) -> tuple[int, float]:
        """How many of the benchmark's evaluations have finished, and how long the last one took."""
        with self._lock:
            done = [e["seconds"] for e in self.evals if e["bench"] and e["seconds"] is not None]
        return len(done), (done[-1] if done else 0.0)


def _ask_for_scores(run: Run, clock: EvalClock, t0: float, every: float, marks: list[float],
                    done: threading.Event) -> None:
    """Ask for a full evaluation every `every` seconds of the user's time (starting at a quarter of
    that and doubling, for resolution early on), and at each of `marks`; never more often than three
    times the last evaluation's length, so that scoring stays a fraction of the benchmark's wall clock."""
    step, due, marks = every / 4, every / 4, sorted(marks)
    while not done.wait(0.05):
        now = clock.user_time(t0)
        if now < min([due, *marks[:1]]):
            continue
        served, _ = clock.bench_done()
        run.request_full_evaluation()
        while not done.wait(0.05) and clock.bench_done()[0] == served:
            pass
        cost = clock.bench_done()[1]
        now = clock.user_time(t0)
        marks = [m for m in marks if m > now]
        step = min(every, 2 * step)
        due = now + max(step, 3 * cost)


def _serialise(update: Update) -> None:
    """What the page's server does with an update: figures to JSON, the views image to PNG."""
    for fig in (update.loss, update.metrics, update.scene):
        if fig is not None:
            fig.to_json()
    if update.views is not None:
        Image.fromarray(update.views).save(io.BytesIO(), format="png")


def streamed_run(method: str, preset: str, device: torch.device, cap_s: float, *, score_every_s: float,
                 quality_at_s: float, overrides: dict[str, Any] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Stream a run of `method` / `preset` on the cow through the page's controller; see the module.

    `cap_s`: stop the run (as the Stop button does) once this much of the user's time has passed.
    `overrides`: knob values on top of the preset (tests use a few iterations).
    """
    cls = get_method(method)
    values = {**preset_values(method, preset, device.type), **(overrides or {})}
    wb = Workbench(Server(max_runs=1, device=device, limits=Limits()))
    log(f"[{method} {preset}] streamed through the page's controller (stopped at {cap_s:.0f} s)")
    ticks, stopped_at = 0, None
    started = time.time()
    try:
        with EvalClock(cls) as clock, PeakRSS() as mem:
            t0 = time.perf_counter()
            update = wb.start(method, "cow", values)
            run = wb.run
            if run is None:  # refused or invalid: the status says why
                return dict(method=method, preset=preset, error=update.status, started=started)
            clock.run = run
            done = threading.Event()
            scorer = threading.Thread(target=_ask_for_scores, name="bench-scorer", daemon=True,
                                      args=(run, clock, t0, score_every_s, [quality_at_s], done))
            scorer.start()
            try:
                while True:
                    _serialise(update)
                    if update.done:
                        break
                    if stopped_at is None and clock.user_time(t0) >= cap_s:
                        wb.stop()
                        stopped_at = clock.user_time(t0)
                    update = wb.tick()
                    ticks += 1
            finally:
                done.set()
                scorer.join()
            end = time.perf_counter()
            evals = clock.snapshot()
        view = run.poll()
        steps = view.losses[-1]["time"] if view.losses else 0.0
        result = dict(
            method=method, preset=preset, started=started, state=view.state, message=view.message,
            iterations=view.iteration, total=view.total, capped=stopped_at is not None, stopped_at_s=stopped_at,
            config=dataclasses.asdict(run.initial_cfg), setup_s=view.setup_s, step_seconds=steps,
            s_per_iteration=steps / max(view.iteration, 1), wall_s=end - t0, user_s=end - t0 - own_eval_seconds(evals, end),
            bench_evals=sum(e["bench"] for e in evals), bench_eval_s=sum(e["seconds"] or 0.0 for e in evals if e["bench"]),
            final=dict(view.final), rows=score_rows(evals, t0), ticks=ticks,
            peak_rss_gb=mem.peak / GB, rss_growth_gb=(mem.peak - mem.start) / GB)
    finally:
        wb.close()
    log(f"[{method} {preset}] streamed: {result['state']} after {result['iterations']} iterations, "
        f"{result['user_s']:.1f} s of the user's time ({result['wall_s']:.1f} s wall clock, "
        f"{result['bench_evals']} benchmark scores taking {result['bench_eval_s']:.1f} s), final {result['final']}")
    return result
