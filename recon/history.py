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

from .params import knobs, to_values

#: Runs a session keeps.
HISTORY_CAP = 20
#: Loss rows kept per run (longer histories are thinned evenly; the first and last rows stay).
MAX_ROWS = 2000
#: Side of a run's thumbnail, in pixels.
THUMB_SIZE = 96

METRIC_NAMES = {"chamfer_10k": "Chamfer", "psnr": "PSNR", "iou": "IoU"}
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
        """The first held-out metric at the last evaluation, e.g. ("chamfer_10k", 0.0008)."""
        if not self.metric_history:
            return None
        last = self.metric_history[-1]
        for k, v in last.items():
            if k not in ("iteration", "time"):
                return k, float(v)
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
        quality = f"{METRIC_NAMES.get(q[0], q[0])} {q[1]:.4g}" if q else "-"
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
        return _resize(np.asarray(render, dtype=np.uint8), size)
    mesh = getattr(snapshot, "mesh", None)
    if mesh is not None and len(mesh.faces):
        return mesh_thumbnail(mesh.verts, mesh.faces, mesh.colors, size)
    return None


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of the longer side to `size`."""
    h, w = img.shape[:2]
    s = size / max(h, w)
    ys = np.minimum((np.arange(max(1, round(h * s))) / s).astype(int), h - 1)
    xs = np.minimum((np.arange(max(1, round(w * s))) / s).astype(int), w - 1)
    return img[ys][:, xs]


def mesh_thumbnail(verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None, size: int = THUMB_SIZE,
                   samples: int = 40_000, seed: int = 0) -> np.ndarray:
    """A shaded picture of a mesh without a renderer: points sampled on its faces, z-buffered.

    The camera looks from the same side as the page's 3D view (orthographic, y up); each point is
    shaded by its face's normal against a light at the camera.
    """
    v = np.asarray(verts, dtype=np.float64)  # (V, 3)
    f = np.asarray(faces, dtype=np.int64)  # (F, 3)
    tri = v[f]  # (F, 3, 3)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3)
    area = np.linalg.norm(normals, axis=1)
    img = np.full((size, size, 3), 255, np.uint8)
    if not np.isfinite(area).all() or area.sum() <= 0:
        return img
    rng = np.random.default_rng(seed)
    fi = rng.choice(len(f), samples, p=area / area.sum())  # area-weighted faces
    r1, r2 = np.sqrt(rng.random(samples)), rng.random(samples)
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)  # (S, 3) barycentric
    pts = (tri[fi] * w[:, :, None]).sum(axis=1)  # (S, 3)
    eye = np.array([1.2, 0.6, 1.6])
    fwd = -eye / np.linalg.norm(eye)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    x, y, depth = pts @ right, pts @ up, pts @ fwd  # depth grows away from the camera
    lo, hi = np.array([x.min(), y.min()]), np.array([x.max(), y.max()])
    scale = (size - 4) / max(float((hi - lo).max()), 1e-9)
    centre = (lo + hi) / 2
    px = np.clip(((x - centre[0]) * scale + size / 2).astype(int), 0, size - 1)
    py = np.clip((size / 2 - (y - centre[1]) * scale).astype(int), 0, size - 1)
    shade = np.abs(normals[fi] / area[fi, None] @ fwd)  # (S,) two-sided Lambert, light at the camera
    if colors is not None:
        base = (np.asarray(colors, dtype=np.float64)[f[fi]] * w[:, :, None]).sum(axis=1)  # (S, 3)
    else:
        base = np.broadcast_to(np.array([0.31, 0.56, 0.84]), (samples, 3))
    rgb = np.clip(base * (0.35 + 0.65 * shade[:, None]), 0, 1)
    order = np.argsort(-depth)  # far first: nearer points overwrite them
    img[py[order], px[order]] = (rgb[order] * 255).round().astype(np.uint8)
    return img


def record_run(run: Any, number: int, target: str, target_source: str = "builtin") -> RunRecord:
    """A :class:`RunRecord` of a :class:`~recon.runner.Run` that has ended."""
    cfg = run.cfg
    start = getattr(run, "initial_cfg", None) or cfg
    _, snap = run.latest_snapshot()
    return RunRecord(number=number, method=run.method_cls.name, target=target, target_source=target_source,
                     settings=to_values(cfg), start_settings=to_values(start), events=[dict(e) for e in run.events],
                     history=_thin(list(run.history)), metric_history=[dict(r) for r in run.metric_history],
                     iterations=run.iteration, total=run.total, state=run.state, thumbnail=thumbnail(snap),
                     key_names=key_names(type(cfg)))


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
