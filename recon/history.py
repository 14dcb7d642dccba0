"""A session's past runs: what each one was (config, live edits) and how it went (loss, quality).

Plain data only, so the page can list, overlay and restore runs without touching a tensor or a
method. A :class:`RunHistory` keeps at most ``cap`` records (oldest dropped first) to bound memory:
a record holds its loss rows, thinned to :data:`MAX_ROWS`, and one small thumbnail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .images import fit_longest
from .methods import get_method
from .params import knobs, to_values
from .render import mesh_picture

#: Runs a session keeps.
HISTORY_CAP = 20
#: Loss rows kept per run (longer histories are thinned evenly; the first and last rows stay).
MAX_ROWS = 2000
#: Side of a run's thumbnail, in pixels.
THUMB_SIZE = 96

HEADERS = ["#", "method", "target", "key settings", "steps", "final loss", "final quality", "state"]


def _thin(rows: Sequence[dict], limit: int = MAX_ROWS) -> list[dict]:
    if len(rows) <= limit:
        return [dict(r) for r in rows]
    idx = np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(int))
    return [dict(rows[i]) for i in idx]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@dataclass
class RunRecord:
    """One finished, stopped or failed run, as plain data."""

    number: int  # 1, 2, ... within the session
    method: str  # registry name
    target: str  # display name of the target mesh
    target_source: str  # "builtin" or "upload"
    settings: dict[str, Any]  # knob values at the end (live edits applied)
    start_settings: dict[str, Any]  # knob values it started with
    events: list[dict[str, Any]]  # live edits: {iteration, name, value}
    history: list[dict[str, float]]  # loss rows (thinned)
    metric_history: list[dict[str, float]]
    iterations: int  # steps taken
    total: int  # steps asked for
    state: str  # "done" | "stopped" | "error"
    thumbnail: np.ndarray | None = None  # uint8 (H, W, 3)
    key_names: tuple[str, ...] = field(default_factory=tuple)  # settings shown in the table

    @property
    def label(self) -> str:
        return f"#{self.number} {self.method} · {self.target}"

    @property
    def final_loss(self) -> float | None:
        return self.history[-1].get("total") if self.history else None

    @property
    def final_quality(self) -> tuple[str, float] | None:
        """The method's first quality measure at the run's last evaluation, e.g. ("Chamfer", 0.0008):
        the full score where the run was scored, else its last live estimate ("PSNR~")."""
        key, metric = next(iter(get_method(self.method).metrics.items()), (None, None))
        if key is None:
            return None
        for row in reversed(self.metric_history):
            if key in row:
                return metric.short, float(row[key])
            if f"live_{key}" in row:
                return metric.short + "~", float(row[f"live_{key}"])
        return None

    def key_settings(self) -> str:
        """The settings worth comparing runs by (weights, learning rate, iterations), edits as old→new."""
        parts = []
        for name in self.key_names:
            short = name.removesuffix("_weight")
            start, end = self.start_settings.get(name), self.settings.get(name)
            parts.append(f"{short} {_short(start)}→{_short(end)}" if start != end else f"{short} {_short(end)}")
        return ", ".join(parts)

    def row(self) -> list[Any]:
        q = self.final_quality
        quality = f"{q[0]} {q[1]:.4g}" if q else "-"
        loss = f"{self.final_loss:.4g}" if self.final_loss is not None and math.isfinite(self.final_loss) else "-"
        return [self.number, self.method, self.target, self.key_settings(), f"{self.iterations} / {self.total}",
                loss, quality, self.state]


def key_names(cfg_cls: type) -> tuple[str, ...]:
    """Knobs that can change mid-run and shape the loss (weights, learning rate)."""
    return tuple(k.name for k in knobs(cfg_cls) if k.live and (k.name.endswith("_weight") or k.name == "lr"))


def thumbnail(snapshot: Any, size: int = THUMB_SIZE) -> np.ndarray | None:
    """A small picture of a run's final state: its rendered view if it has one, else its mesh."""
    if snapshot is None:
        return None
    render = getattr(snapshot, "images", {}).get("render")
    if render is not None:
        return fit_longest(np.asarray(render, dtype=np.uint8), size)
    mesh = getattr(snapshot, "mesh", None)
    if mesh is not None and len(mesh.faces):
        return mesh_picture(mesh.verts, mesh.faces, mesh.colors, size)
    return None


def record_run(run: Any, number: int, target: str, target_source: str = "builtin") -> RunRecord:
    """A :class:`RunRecord` of a :class:`~recon.runner.Run` that has ended (read through its poll)."""
    cfg = run.cfg
    view = run.poll()
    _, snap = run.latest_snapshot()
    return RunRecord(number=number, method=run.method_cls.name, target=target, target_source=target_source,
                     settings=to_values(cfg), start_settings=to_values(run.initial_cfg),
                     events=[dict(e) for e in view.events], history=_thin(view.losses),
                     metric_history=[dict(r) for r in view.metrics], iterations=view.iteration, total=view.total,
                     state=view.state, thumbnail=thumbnail(snap), key_names=key_names(type(cfg)))


class RunHistory:
    """A session's runs, newest last, at most `cap` of them; each run recorded once."""

    def __init__(self, cap: int = HISTORY_CAP) -> None:
        self.cap = max(1, int(cap))
        self.records: list[RunRecord] = []
        self._count = 0
        self._seen: set[Any] = set()  # keys (run tickets) already recorded

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def next_number(self) -> int:
        return self._count + 1

    def recorded(self, key: Any) -> bool:
        """Whether a run with `key` (its ticket) is in the history already."""
        return key in self._seen

    def add(self, record: RunRecord, key: Any = None) -> bool:
        """Keep `record` (dropping the oldest beyond the cap); False if `key` was recorded before."""
        if key is not None:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._count = max(self._count, record.number)
        self.records.append(record)
        del self.records[:-self.cap]
        return True

    def get(self, number: int | str | None) -> RunRecord | None:
        try:
            n = int(str(number).lstrip("#"))
        except (TypeError, ValueError):
            return None
        return next((r for r in self.records if r.number == n), None)

    def rows(self) -> list[list[Any]]:
        """One summary row per run (see HEADERS), newest first."""
        return [r.row() for r in reversed(self.records)]

    def choices(self) -> list[tuple[str, str]]:
        """(label, value) pairs for a selection of runs, newest first."""
        return [(r.label, str(r.number)) for r in reversed(self.records)]

    def overlays(self, numbers: Sequence[int | str]) -> list[tuple[str, list[dict]]]:
        """(label, loss rows) of the chosen runs that are still kept, oldest first, for the loss chart."""
        chosen = {str(n) for n in numbers}
        return [(f"#{r.number}", r.history) for r in self.records if str(r.number) in chosen]
