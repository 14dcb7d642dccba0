"""One page session's controller, in plain Python: what the page shows and does, without gradio.

A :class:`Workbench` holds a session's state (its targets, its run, its history, its files) and
offers the page's actions: :meth:`start`, :meth:`tick`, :meth:`pause`, :meth:`stop`,
:meth:`live_edit`, :meth:`restore`, :meth:`load_config`, :meth:`export`. Each returns plain values
by role (status text, figures, images, knob values, a message); ``app.py`` only binds them to
components. A run is read through :meth:`recon.runner.Run.poll` and nothing else.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import vis
from .assets import AssetError, MeshAsset
from .config import ConfigError, load_config
from .cost import advice
from .datasets import Dataset, DatasetError
from .downloads import Downloads
from .history import RunHistory, record_run
from .images import views_grid
from .methods import get_method, preset_values
from .params import knobs, to_values, validate
from .runner import Cursor, Run, RunView
from .server import Server
from .targets import TargetChoice, adapt_settings, target_points, views_for_config, write_views
from .text import edit_note, fmt_seconds, md_escape, safe_name, status_text

#: Seconds between page updates while a run streams: the status line, the charts, the 3D view. Each
#: chart redraw costs the browser tens of milliseconds, and the 3D view's WebGL scene hundreds where
#: there is no GPU: more often, and a slow client spends its time redrawing instead of answering clicks.
REFRESH_S = 0.5
CHART_REFRESH_S = 1.0
SCENE_REFRESH_S = 2.5


@dataclass(frozen=True)
class Update:
    """What the page shows now; None: leave that part as it is."""

    status: str | None = None
    loss: vis.Figure | None = None
    metrics: vis.Figure | None = None
    scene: vis.Figure | None = None
    views: np.ndarray | None = None
    running: bool | None = None  # settings locked (True) or free again (False)
    message: str | None = None
    done: bool = False  # the run's stream is over


@dataclass(frozen=True)
class Loaded:
    """A method and every knob value to put into the page (restore, load a config), and what to say."""

    method: str
    values: dict[str, Any]
    target: str | None  # a target choice available in this session, or None to leave the target
    message: str


@dataclass
class _Watch:
    """The session's view of its current run: what it has read so far."""

    run: Run
    target_name: str
    target_source: str
    cursor: Cursor = Cursor()
    losses: list[dict] = field(default_factory=list)
    metrics: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # what was adjusted at the start
    price: str = ""  # the estimate the run was started with
    scene_seq: int = -1
    scene_at: float = 0.0
    charts_at: float = 0.0
    refreshed_at: float = 0.0
    paused_since: float | None = None


class Workbench:
    """A session: its targets, its run, its history and its files. Never shared between sessions."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.targets = TargetChoice()
        self.history = RunHistory()
        self.overlays: list[str] = []
        self._watch: _Watch | None = None
        self._ending: list[_Watch] = []  # closed runs whose workers are still ending, to record once they have
        self._lock = threading.RLock()
        self.downloads = Downloads(self._lock)
        self._closed = False
        self.last_active = time.monotonic()
        server.sessions.add(self)

    def __deepcopy__(self, memo: dict) -> Workbench:  # gr.State copies its value per session: one each
        return self

    @property
    def run(self) -> Run | None:
        return self._watch.run if self._watch else None

    @property
    def adjusted(self) -> list[str]:
        """What was changed in the current run's settings as it started (clamped values and the like)."""
        return list(self._watch.messages) if self._watch else []

    # --- targets ----------------------------------------------------------------------------
    def preview(self, name: str) -> tuple[vis.Figure | None, str]:
        """The target's 3D preview and a line about it (or a message saying why it is not available)."""
        try:
            target = self.targets.resolve(name)
        except (AssetError, DatasetError) as exc:
            return None, f"⚠️ {md_escape(str(exc))}"
        return self._target_figure(target), self.targets.describe(target)

    def upload(self, path: str | None) -> tuple[str | None, vis.Figure | None, str]:
        """An uploaded mesh or dataset zip: (the target choice to select, its preview, a message)."""
        if not path:
            return None, None, ""
        try:
            choice, target = self.targets.upload(path)
        except (AssetError, DatasetError) as exc:
            return None, None, f"⚠️ {md_escape(str(exc))}"
        except Exception as exc:  # never let a malformed upload take the page down
            return None, None, f"⚠️ That file could not be used ({type(exc).__name__})."
        return choice, self._target_figure(target), self.targets.describe(target, uploaded=True)

    def _target_figure(self, target: MeshAsset | Dataset) -> vis.Figure:
        label = "training cameras" if isinstance(target, Dataset) else "target points"
        return vis.scene_figure(target_points=target_points(target), title=f"target: {target.name}",
                                target_label=label)

    # --- pricing and starting ----------------------------------------------------------------
    def prepare(self, method: str, target_name: str, values: dict[str, Any]) -> tuple[Any, Any, Any, list[str]]:
        """(method class, target, config, messages) for a run, or raises ValueError saying why not."""
        cls = get_method(method)
        target = self.targets.resolve(target_name)
        if isinstance(target, Dataset) and not cls.fits_images:
            raise ValueError(f"{cls.title} fits a mesh's surface, and {target.name!r} is an image dataset: pick a "
                             "mesh target, or a method that fits images (textured mesh, volume, NeRF, splats).")
        cfg, messages = validate(cls.Config, values)
        cfg, notes = adapt_settings(cfg, target)
        return cls, target, cfg, messages + notes

    def estimate(self, method: str, target_name: str, values: dict[str, Any]) -> str:
        """What a run of these settings costs, in a line beside Run ("about 2 min · 0.7 GB")."""
        try:
            cls, _, cfg, _ = self.prepare(method, target_name, values)
        except (AssetError, DatasetError, ValueError, KeyError) as exc:
            return f"⚠️ {md_escape(str(exc))}"
        est = cls.estimate(cfg, self.server.device)
        if self.server.fits(est):
            return f"Estimate: {est.describe()} on {self.server.device_name}"
        return "⚠️ " + md_escape(self.refusal(cls, cfg, est))

    def refusal(self, cls: Any, cfg: Any, est: Any) -> str:
        lim = self.server.limits
        return advice(cls.name, cfg, self.server.device, lim.memory_bytes, lim.seconds)

    def start(self, method: str, target_name: str, values: dict[str, Any]) -> Update:
        """Price and start a run of `method` on the target; the previous run of this session ends."""
        self.last_active = time.monotonic()
        try:
            cls, target, cfg, messages = self.prepare(method, target_name, values)
        except (AssetError, DatasetError, ValueError, KeyError) as exc:
            return Update(status=f"error · {exc}", running=False, done=True)
        est = cls.estimate(cfg, self.server.device)
        if not self.server.fits(est):
            return Update(status=f"refused · {self.refusal(cls, cfg, est)}", running=False, done=True)
        with self._lock:
            if self._closed:
                return Update(status="error · this session has ended; reload the page", done=True)
            self._end_run()
            run = Run(cls, target, cfg, self.server.device, slots=self.server.slots, limits=self.server.limits)
            source = "builtin" if self.targets.is_builtin(target_name) else "upload"
            self._watch = _Watch(run, target.name, source, messages=messages, price=est.describe())
            run.start()
        return self.tick(wait=False)

    def _end_run(self) -> None:
        """Close the current run (its worker stops and frees its model); it joins the history once ended."""
        if self._watch is not None:
            self._watch.run.close()
            self._ending.append(self._watch)
        self._record()

    def _record(self) -> None:
        """Keep every run of this session that has ended in its history (each once)."""
        for w in [*self._ending, *([self._watch] if self._watch else [])]:
            run = w.run
            if run.wait_settled(0) and not self.history.recorded(run.ticket) and run.poll().iteration:
                self.history.add(record_run(run, self.history.next_number(), w.target_name, w.target_source),
                                 key=run.ticket)
        self._ending = [w for w in self._ending if not w.run.wait_settled(0)]

    # --- watching ---------------------------------------------------------------------------
    def tick(self, wait: bool = True) -> Update:
        """The page's next update: waits until the next refresh is due (with `wait`), then reads the run."""
        w = self._watch
        if w is None:
            return Update(status="idle · press Run", done=True)
        if wait:
            time.sleep(max(0.0, w.refreshed_at + REFRESH_S - time.monotonic()))
        now = time.monotonic()
        w.refreshed_at = self.last_active = now
        view = w.run.poll(w.cursor)
        w.cursor = view.cursor
        w.losses += view.losses
        w.metrics += view.metrics
        w.events += view.events
        self._give_up_slot_if_paused_too_long(w, view, now)
        scene = views = None
        if view.snapshot_seq != w.scene_seq and (now - w.scene_at >= SCENE_REFRESH_S or w.scene_seq < 0
                                                  or view.finished):
            _, snap = w.run.latest_snapshot()
            cls = w.run.method_cls
            scene = vis.snapshot_figure(snap, target_points(w.run.target), title=f"{cls.title}: {w.target_name}",
                                        target_label="training cameras" if isinstance(w.run.target, Dataset)
                                        else "target points", points_label=getattr(cls, "points_label", ""))
            views = views_grid(snap.images) if snap is not None and snap.images else None
            w.scene_seq, w.scene_at = view.snapshot_seq, now
            w.run.request_snapshot()
        done = view.finished and not view.scoring
        self._record()
        loss = metrics = None
        if now - w.charts_at >= CHART_REFRESH_S or done or view.finished:
            cls = w.run.method_cls
            loss = self.loss_figure()
            metrics = vis.metrics_figure(w.metrics, cls.metrics, cls.live_note)
            w.charts_at = now
        return Update(status=self._status(w, view), loss=loss, scene=scene, views=views, metrics=metrics,
                      running=not done, done=done)

    def follow(self) -> Iterator[Update]:
        """Updates until the run's stream is over (the run has ended and been scored)."""
        while True:
            update = self.tick()
            yield update
            if update.done:
                return

    def _give_up_slot_if_paused_too_long(self, w: _Watch, view: RunView, now: float) -> None:
        """A run paused past the server's pause timeout, while others wait, is stopped (its result kept)."""
        if view.state != "paused":
            w.paused_since = None
            return
        w.paused_since = w.paused_since or now
        if now - w.paused_since > self.server.pause_timeout and self.server.waiting() > 0:
            w.run.stop(f"Paused for over {fmt_seconds(self.server.pause_timeout)} while others waited for a "
                       "slot: stopped to let them run. What was fitted is kept; press Run to start again.")

    def _status(self, w: _Watch, view: RunView) -> str:
        cls = w.run.method_cls
        text = status_text(view, cls.metrics, self.server.device_name, self.server.max_runs)
        if w.price:
            text += f"\npriced at {w.price}"
        if w.messages:  # API clients never see toasts: repeat what was adjusted
            text += "\nadjusted: " + "; ".join(w.messages)
        if w.events:
            text += "\nlive edits: " + edit_note(w.events, {k.name: k.label for k in knobs(cls.Config)})
        return text

    def loss_figure(self) -> vis.Figure:
        w = self._watch
        return vis.loss_figure(w.losses if w else [], w.events if w else [], self.history.overlays(self.overlays))

    # --- control ----------------------------------------------------------------------------
    def pause(self) -> tuple[str, str | None]:
        """Pause or resume the run at once: (the button's new label, the status now)."""
        run = self.run
        if run is None or run.poll().finished:
            return "Pause", None
        if run.paused:
            run.resume()
            label = "Pause"
        else:
            run.pause()
            label = "Resume"
        return label, self._status(self._watch, run.poll())

    def stop(self) -> str | None:
        """Ask the run to stop; returns at once with the status that says so."""
        run = self.run
        if run is None:
            return None
        run.stop()
        return self._status(self._watch, run.poll())

    def live_edit(self, method: str, name: str, value: Any) -> tuple[bool, list[str]]:
        """Change a live setting of the running run from its next step: (queued?, messages)."""
        run = self.run
        if run is None or run.poll().finished:
            return False, ["no run is going: the value applies to the next run"]
        if run.method_cls.name != method:
            return False, [f"the running method is {run.method_cls.name}, not {method}: nothing changed"]
        messages = run.update(**{name: value})
        return run.has_pending(name), messages

    def request_full_evaluation(self) -> str:
        run = self.run
        if run is None or run.poll().finished:
            return "No run is going: a finished run has its full score already."
        run.request_full_evaluation()
        return "The full held-out score will be measured after the current step."

    # --- history, restore, configs ----------------------------------------------------------
    def set_overlays(self, numbers: list[Any] | None) -> vis.Figure:
        picked = []
        for n in numbers or []:
            word = str(n).lstrip("#").split()
            if word and self.history.get(word[0]) is not None:
                picked.append(word[0])
        self.overlays = picked
        return self.loss_figure()

    def restore(self, number: Any) -> Loaded | str:
        """A past run's method, target and every setting (as it ended, live edits included)."""
        rec = self.history.get(number)
        if rec is None:
            return "⚠️ Pick a run from the history to restore."
        if self.run is not None and not self.run.poll().finished:
            return "⚠️ Stop the current run first."
        target = self.targets.choice_for(rec.target, rec.target_source)
        msg = f"Restored run **#{rec.number}**: {get_method(rec.method).title} on {md_escape(rec.target)}."
        if rec.events:
            msg += " Its live edits are in the sliders: " + md_escape(edit_note(rec.events)) + "."
        if target is None:
            msg += f"\n\nNote: target {md_escape(rec.target)!r} is no longer here: upload it again."
        return Loaded(rec.method, {**preset_values(rec.method), **rec.settings}, target, msg)

    def load_config(self, path: str | None) -> Loaded | str:
        """A config JSON sets the method, the target (when available) and every setting."""
        if not path:
            return ""
        try:
            loaded = load_config(path)
        except ConfigError as exc:
            return f"⚠️ {md_escape(str(exc))}"
        notes = list(loaded.messages)
        target = self.targets.choice_for(loaded.target or "", loaded.target_source)
        if target is None and loaded.target:
            notes.append(f"target {loaded.target!r} is not here: upload it, then pick it")
        values = to_values(loaded.cfg)
        msg = f"Loaded the config: **{get_method(loaded.method).title}**, {len(values)} settings."
        return Loaded(loaded.method, values, target, msg + "".join(f"\n\nNote: {md_escape(n)}" for n in notes))

    # --- files ------------------------------------------------------------------------------
    def export(self, threshold: float | None = None, extras: bool = False) -> tuple[dict[str, Path], list[str]]:
        """The finished run's core files (replacing the previous export), or with `extras` its videos;
        returns (kind -> path, notes). Splats add "viewer_ply", their framing for the page's viewer."""
        w = self._watch
        if w is None or not w.run.wait_settled(0) or self._closed:
            return {}, []
        return self.downloads.export(w.run, w.target_name, w.target_source,
                                     threshold=threshold if threshold and threshold > 0 else None, extras=extras)

    def export_views(self, method: str, target_name: str, values: dict[str, Any]) -> tuple[Path | None, str]:
        """The target's views as `method` sees them (training and held-out), as a NeRF-synthetic zip."""
        try:
            cls, target, cfg, _ = self.prepare(method, target_name, values)
            if not cls.fits_images:
                cls = get_method("volume")  # deformation renders no views: give the volumetric methods' ones
                cfg, _ = validate(cls.Config, {"image_size": 128})
            with self._lock:
                path = write_views(views_for_config(cls, target, cfg, self.server.device, same_size=True),
                                   self.downloads.path(f"{safe_name(target.name)}_views.zip"))
        except (AssetError, DatasetError, ValueError, KeyError) as exc:
            return None, f"⚠️ {md_escape(str(exc))}"
        return path, f"The target views of **{md_escape(target.name)}** in the NeRF-synthetic layout."

    def close(self) -> None:
        """The session has ended: stop its run, free its model, delete its files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._watch is not None:
                self._watch.run.close()
            self.downloads.delete()
            self.targets.clear()
        self.server.sessions.discard(self)


__all__ = ["Loaded", "Update", "Workbench"]
