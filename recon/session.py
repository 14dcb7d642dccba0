"""What the page keeps per browser session, and the plain-python helpers its handlers use.

Nothing here imports gradio: ``app.py`` builds the Blocks and calls into this module, so the
session logic (state, history, status line, preset values) is testable without a server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import vis
from .assets import BUILTINS, AssetError, MeshAsset, load_builtin
from .history import RunHistory, record_run
from .params import Knob, knobs
from .runner import Run

#: The target dropdown's entry for the session's uploaded mesh.
UPLOADED = "uploaded mesh"

METRIC_LABELS = {"chamfer_10k": "Chamfer (10k points)", "psnr": "PSNR (dB)", "iou": "silhouette IoU"}


@dataclass
class SessionState:
    """Everything one browser session owns. Never shared between sessions."""

    run: Run | None = None
    run_target: MeshAsset | None = None
    uploaded: MeshAsset | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    export_dir: str | None = None  # this session's downloads; created on first use, removed with the session
    pending_config: tuple[str, dict] | None = None  # (method, knob values) a loaded config waits to apply
    history: RunHistory = field(default_factory=RunHistory)  # finished and stopped runs
    overlays: list[str] = field(default_factory=list)  # run numbers drawn faintly on the loss chart

    def downloads_dir(self) -> str:
        with self.lock:
            if self.export_dir is None:
                self.export_dir = tempfile.mkdtemp(prefix="recon-session-")
            return self.export_dir

    def record(self, run: Run | None = None) -> bool:
        """Keep `run` (default: the current one) in the history once it has ended; True if newly kept."""
        run = run or self.run
        if run is None or run.alive or not run.finished or not run.history:
            return False
        asset = run.asset
        source = "builtin" if str(getattr(asset, "key", "")).startswith("builtin:") else "upload"
        with self.lock:
            if run.ticket in self.history._seen:
                return False
            rec = record_run(run, self.history.next_number(), getattr(asset, "name", "?"), source)
            return self.history.add(rec, key=run.ticket)

    def live_edit(self, method: str, name: str, value: Any) -> tuple[bool, list[str]]:
        """Change a live setting of the running run from its next step: (queued?, messages).

        Refused (False with a reason) when no run of `method` is going or `name` cannot change
        mid-run; a value out of range is clamped and said so. An unchanged value is no edit.
        """
        run = self.run
        if run is None or run.finished:
            return False, ["no run is going: the value applies to the next run"]
        running = run.method_cls.name
        if running != method:
            return False, [f"the running method is {running}, not {method}: nothing changed"]
        by_name = {k.name: k for k in knobs(type(run.cfg))}
        k = by_name.get(name)
        if k is not None and k.live and k.clamp(value)[0] == getattr(run.cfg, name) and not run.has_pending(name):
            return False, []
        messages = run.update(**{name: value})
        return bool(k is not None and k.live), messages

    def loss_overlays(self) -> list[tuple[str, list[dict]]]:
        return self.history.overlays(self.overlays)


class Sessions:
    """Per-session state keyed by Gradio's session hash; dropped when the tab closes."""

    def __init__(self) -> None:
        self._by_hash: dict[str, SessionState] = {}
        self._lock = threading.Lock()

    def get(self, request: Any) -> SessionState:
        key = getattr(request, "session_hash", None) or "anonymous"
        with self._lock:
            return self._by_hash.setdefault(key, SessionState())

    def drop(self, request: Any) -> None:
        key = getattr(request, "session_hash", None) or "anonymous"
        with self._lock:
            sess = self._by_hash.pop(key, None)
        if sess is not None and sess.run is not None:
            sess.run.close()
        if sess is not None and sess.export_dir is not None:
            shutil.rmtree(sess.export_dir, ignore_errors=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_hash)


def default_max_runs() -> int:
    """Simultaneous runs: $RECON_MAX_RUNS, else 1 on a CPU machine and 4 with a GPU."""
    env = os.environ.get("RECON_MAX_RUNS", "").strip()
    if env:
        return max(1, int(env))
    import torch

    return 4 if torch.cuda.is_available() else 1


def resolve_target(sess: SessionState, name: str) -> MeshAsset:
    if name == UPLOADED:
        if sess.uploaded is None:
            raise AssetError("Upload a mesh first (.obj, .ply, .off, .stl or .glb), or pick a built-in target.")
        return sess.uploaded
    return load_builtin(name)


def grouped(ks: list[Knob]) -> list[Knob]:
    """Knobs group by group, in first-appearance order: the order the page shows them in."""
    order = list(dict.fromkeys(k.group for k in ks))
    return sorted(ks, key=lambda k: order.index(k.group))


def device_preset(cls: Any) -> str:
    """The preset a method starts with on this machine (e.g. "Quick" on a CPU): recon's default."""
    import torch

    kind = "cuda" if torch.cuda.is_available() else "cpu"
    return cls.device_presets.get(kind) or next(iter(cls.presets), "Defaults")


def preset_choices(cls: Any) -> list[str]:
    return list(cls.presets) or ["Defaults"]


def preset_values(cls: Any, preset: str) -> dict[str, Any]:
    """Every knob's value under `preset`: the config defaults updated with the preset's values."""
    return {**{k.name: k.default for k in knobs(cls.Config)}, **cls.presets.get(preset, {})}


def target_choice(sess: SessionState, name: str, source: str) -> str | None:
    """The target dropdown value for a target named `name` (None when it is not available here)."""
    if source == "builtin" and name in BUILTINS:
        return name
    if sess.uploaded is not None and name == sess.uploaded.name:
        return UPLOADED
    return None


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def status_text(st: dict[str, Any], device: str, capacity: int) -> str:
    """The status line: state, progress, speed, timing, device; then the latest losses and metrics."""
    state = st["state"]
    if state == "queued":
        pos = st["queue_position"]
        return (f"waiting · position {pos} in line for a free slot ({capacity} run"
                f"{'s' if capacity > 1 else ''} at a time on this server) · device {device}")
    head = (f"{state} · iteration {st['iteration']} / {st['total']} · {st['its_per_s']:.2f} it/s · "
            f"elapsed {fmt_seconds(st['elapsed'])} · ETA {fmt_seconds(st['eta'])} · device {device}")
    parts = []
    if st["loss"].get("total") is not None:
        parts.append(f"loss {st['loss']['total']:.5g}")
    for k, v in st["metrics"].items():
        if k not in ("iteration", "time"):
            parts.append(f"{METRIC_LABELS.get(k, k)} {v:.4g}")
    lines = [head]
    if parts:
        lines.append(" · ".join(parts))
    if st["message"]:
        lines.append(st["message"])
    return "\n".join(lines)


def views_image(snap: Any) -> np.ndarray | None:
    """Target vs current render (top) and target vs current silhouette (bottom), as one image."""
    if snap is None or not snap.images:
        return None
    ims = snap.images
    rows = []
    for pair in (("target", "render"), ("target_silhouette", "silhouette")):
        row = [ims[k] for k in pair if k in ims]
        if row:
            rows.append(vis.side_by_side(row))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    out = np.concatenate(rows, axis=0)
    scale = max(1, 384 // max(out.shape[0], 1))
    return out.repeat(scale, 0).repeat(scale, 1) if scale > 1 else out


def edit_note(events: list[dict[str, Any]], labels: dict[str, str] | None = None) -> str:
    """Live edits in words: "Chamfer weight → 3 at iteration 40; ..."."""
    labels = labels or {}
    return "; ".join(f"{labels.get(e['name'], e['name'])} → {e['value']:.4g} at iteration {e['iteration']}"
                     if isinstance(e["value"], (int, float)) else
                     f"{labels.get(e['name'], e['name'])} → {e['value']} at iteration {e['iteration']}"
                     for e in events)
